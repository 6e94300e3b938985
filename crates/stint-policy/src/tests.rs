//! Decisions, loading errors, lint and the worked example of `docs/policies.md`.

use time::UtcOffset;
use time::macros::datetime;

use super::*;

fn target(name: &str, requesters: &[&str], approvers: &[&str], approvals: u32, max_ttl_s: u64) -> TargetInfo {
    TargetInfo {
        name: name.into(),
        kind: "jwt".into(),
        environment: None,
        tags: Vec::new(),
        requester_groups: requesters.iter().map(|s| (*s).into()).collect(),
        approver_groups: approvers.iter().map(|s| (*s).into()).collect(),
        approvals_required: approvals,
        max_ttl_s,
    }
}

fn principal(name: &str, kind: &str, groups: &[&str]) -> PrincipalInfo {
    PrincipalInfo {
        name: name.into(),
        kind: kind.into(),
        groups: groups.iter().map(|s| (*s).into()).collect(),
    }
}

/// Local time in the week of Monday 2026-11-30 (UTC).
fn at(weekday: &str, hour: u8, minute: u8) -> TimeParts {
    let day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .position(|d| *d == weekday)
        .unwrap();
    let t = datetime!(2026-11-30 00:00 UTC).unix_timestamp()
        + i64::try_from(day).unwrap() * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60;
    time_parts(t, UtcOffset::UTC)
}

fn ctx(ttl_s: u64) -> RequestContext {
    RequestContext {
        ttl_s,
        reason: "maintenance".into(),
        binding_kind: String::new(),
        binding_ref: String::new(),
        break_glass: false,
        time: at("Tue", 7, 0),
    }
}

fn bound(mut c: RequestContext, kind: &str, reference: &str) -> RequestContext {
    c.binding_kind = kind.into();
    c.binding_ref = reference.into();
    c
}

fn engine(src: &str, targets: &[TargetInfo]) -> PolicyEngine {
    PolicyEngine::new(src, targets).unwrap_or_else(|e| panic!("{src}\n{e:#?}"))
}

fn errors(src: &str) -> Vec<PolicyError> {
    match PolicyEngine::new(src, &[target("plc-gw", &["vendors"], &["ot-leads"], 1, 3600)]) {
        Ok(_) => panic!("accepted: {src}"),
        Err(e) => e,
    }
}

// --- decisions ------------------------------------------------------------------------------------

const TABLE_POLICIES: &str = r#"
@id("three-for-big")
@approvals("3")
permit (principal in Group::"vendors", action == Action::"request", resource == Target::"plc-gw")
when { context.ttl_s > 1800 && context.ttl_s <= 3600 };

@id("no-weekend")
forbid (principal, action == Action::"request", resource == Target::"plc-gw")
when { ["Sat", "Sun"].contains(context.time.weekday) };

@id("zero-extra")
@approvals("0")
permit (principal, action == Action::"request", resource == Target::"api")
when { principal.kind == "ci_job" && context.binding.kind == "pipeline" };

permit (principal == Principal::"auditor", action == Action::"read_evidence", resource);
"#;

#[test]
fn decisions_name_the_policies_that_made_them() {
    use Action::{Admin, Approve, BreakGlass, End, ReadEvidence, Request};
    let targets = [
        target("plc-gw", &["vendors"], &["ot-leads"], 1, 3600),
        target("api", &[], &[], 2, 600),
    ];
    let e = engine(TABLE_POLICIES, &targets);
    let vendor = principal("acme", "vendor", &["vendors"]);
    let lead = principal("lead-a", "human", &["ot-leads"]);
    let ci = principal("ci", "ci_job", &[]);
    let auditor = principal("auditor", "human", &[]);
    let stranger = principal("eve", "human", &["others"]);
    let (plc, api) = (&targets[0], &targets[1]);
    let weekend = RequestContext {
        time: at("Sat", 7, 0),
        ..ctx(600)
    };
    let gen_req = "target:plc-gw:request:vendors";
    let gen_approve = "target:plc-gw:approve:ot-leads";
    let yes = |approvals: u32, ids: &[&str]| Decision {
        allow: true,
        approvals_required: approvals,
        reasons: ids.iter().map(|s| (*s).to_owned()).collect(),
    };
    let no = |ids: &[&str]| Decision {
        allow: false,
        ..yes(0, ids)
    };
    let break_glass = RequestContext {
        break_glass: true,
        ..ctx(600)
    };
    let pipeline = bound(ctx(60), "pipeline", "run-1");
    #[rustfmt::skip]
    let cases = [
        ("generated request permit, target floor", &vendor, Request, plc, ctx(600), yes(1, &[gen_req])),
        ("@approvals over the floor", &vendor, Request, plc, ctx(3600), yes(3, &[gen_req, "three-for-big"])),
        ("above the generated TTL bound: default deny", &vendor, Request, plc, ctx(3601), no(&[])),
        ("forbid beats permit", &vendor, Request, plc, weekend, no(&["no-weekend"])),
        ("not a requester: default deny", &stranger, Request, plc, ctx(600), no(&[])),
        ("@approvals below the floor: the floor", &ci, Request, api, pipeline, yes(2, &["zero-extra"])),
        ("condition unmet", &ci, Request, api, ctx(60), no(&[])),
        ("generated approve permit, no approvals", &lead, Approve, plc, ctx(600), yes(0, &[gen_approve])),
        ("requesters do not approve", &vendor, Approve, plc, ctx(600), no(&[])),
        ("an unnamed user policy is policy3", &auditor, ReadEvidence, api, ctx(0), yes(0, &["policy3"])),
        ("nothing generated for end", &vendor, End, plc, ctx(600), no(&[])),
        ("nothing generated for read_evidence", &lead, ReadEvidence, plc, ctx(600), no(&[])),
        ("nothing generated for admin", &lead, Admin, plc, ctx(600), no(&[])),
        ("requesters cannot break glass", &vendor, BreakGlass, plc, break_glass, no(&[])),
    ];
    for (what, who, action, on, c, want) in cases {
        assert_eq!(e.authorize(who, action, on, &c), want, "{what}");
    }
}

#[test]
fn user_permits_add_to_generated_ones_and_only_forbids_narrow_them() {
    let plc = target("plc-gw", &["vendors"], &["ot-leads"], 1, 14_400);
    let vendor = principal("acme", "vendor", &["vendors"]);
    let two = r#"@id("two-leads") @approvals("2")
permit (principal in Group::"vendors", action == Action::"request", resource == Target::"plc-gw")
when { context.ttl_s <= 7200 };"#;
    let e = engine(two, std::slice::from_ref(&plc));
    let d = e.authorize(&vendor, Action::Request, &plc, &ctx(3600));
    assert_eq!((d.approvals_required, d.reasons.len()), (2, 2));
    // Past the user permit's bound the generated permit (ttl <= max_ttl_s) still allows, at the floor.
    let d = e.authorize(&vendor, Action::Request, &plc, &ctx(10_000));
    assert_eq!(
        d,
        Decision {
            allow: true,
            approvals_required: 1,
            reasons: vec!["target:plc-gw:request:vendors".into()]
        }
    );
    // A forbid narrows every way in.
    let cap = format!(
        "{two}\n@id(\"cap\") forbid (principal, action == Action::\"request\", resource)\n\
         when {{ context.ttl_s > 7200 }};"
    );
    let d = engine(&cap, std::slice::from_ref(&plc)).authorize(&vendor, Action::Request, &plc, &ctx(10_000));
    assert_eq!(d.reasons, ["cap"]);
}

#[test]
fn a_maintenance_window_allows_an_ot_vendor_tue_to_thu_6_to_10_local_only() {
    let plc = target("plc-gw", &[], &["ot-leads"], 1, 14_400);
    let src = r#"
@id("ot-vendor-window")
@approvals("2")
permit (principal in Group::"ot-vendors", action == Action::"request", resource == Target::"plc-gw")
when {
  context.binding.kind == "ticket" &&
  ["Tue", "Wed", "Thu"].contains(context.time.weekday) &&
  context.time.hour >= 6 && context.time.hour < 10
};
"#;
    let e = engine(src, std::slice::from_ref(&plc));
    let vendor = principal("acme", "vendor", &["ot-vendors"]);
    let ask = |time: TimeParts| {
        let c = RequestContext {
            time,
            ..bound(ctx(3600), "ticket", "OT-1")
        };
        e.authorize(&vendor, Action::Request, &plc, &c)
    };
    for (day, h, m) in [("Tue", 6, 0), ("Wed", 7, 30), ("Thu", 9, 59)] {
        let d = ask(at(day, h, m));
        assert!(d.allow, "{day} {h}:{m}");
        assert_eq!(
            (d.approvals_required, d.reasons.as_slice()),
            (2, ["ot-vendor-window".to_owned()].as_slice())
        );
    }
    for (day, h, m) in [
        ("Tue", 5, 59),
        ("Tue", 10, 0),
        ("Thu", 23, 0),
        ("Mon", 7, 0),
        ("Fri", 7, 0),
        ("Sun", 8, 0),
    ] {
        assert_eq!(
            ask(at(day, h, m)),
            Decision {
                allow: false,
                approvals_required: 0,
                reasons: vec![]
            },
            "{day} {h}:{m}"
        );
    }
    // Local time in a configured offset: Tuesday 05:30Z is 06:30 at +01:00 (inside), 05:30 at UTC (outside).
    let t = datetime!(2026-12-01 05:30 UTC).unix_timestamp();
    assert!(ask(time_parts(t, UtcOffset::from_hms(1, 0, 0).unwrap())).allow);
    assert!(!ask(time_parts(t, UtcOffset::UTC)).allow);
    // Monday 23:30 at -08:00 is Tuesday 07:30Z, but local Monday: outside.
    let t = datetime!(2026-12-01 07:30 UTC).unix_timestamp();
    assert!(!ask(time_parts(t, UtcOffset::from_hms(-8, 0, 0).unwrap())).allow);
    // Without the ticket binding, never.
    let c = RequestContext {
        time: at("Wed", 7, 0),
        ..ctx(3600)
    };
    assert!(!e.authorize(&vendor, Action::Request, &plc, &c).allow);
}

#[test]
fn break_glass_is_allowed_only_by_an_explicit_permit() {
    let db = target("db", &["dbas"], &["dba-leads"], 1, 14_400);
    let agent = principal("sre-agent", "agent", &["agents", "dbas"]);
    let bg = |kind: &str, ttl: u64| RequestContext {
        break_glass: true,
        ..bound(ctx(ttl), kind, "INC-1")
    };
    // The generated policies let the agent request (as a dba) but never break glass.
    let plain = engine("", std::slice::from_ref(&db));
    assert!(plain.authorize(&agent, Action::Request, &db, &ctx(600)).allow);
    assert!(
        !plain
            .authorize(&agent, Action::BreakGlass, &db, &bg("incident", 600))
            .allow
    );
    let e = engine(
        r#"@id("agent-bg")
permit (principal in Group::"agents", action == Action::"break_glass", resource == Target::"db")
when { context.binding.kind == "incident" && context.ttl_s <= 1800 };"#,
        std::slice::from_ref(&db),
    );
    let d = e.authorize(&agent, Action::BreakGlass, &db, &bg("incident", 1800));
    assert_eq!(
        d,
        Decision {
            allow: true,
            approvals_required: 0,
            reasons: vec!["agent-bg".into()]
        }
    );
    assert!(
        !e.authorize(&agent, Action::BreakGlass, &db, &bg("incident", 1801))
            .allow
    );
    assert!(
        !e.authorize(&agent, Action::BreakGlass, &db, &bg("ticket", 600))
            .allow
    );
    let dba = principal("dana", "human", &["dbas"]);
    assert!(
        !e.authorize(&dba, Action::BreakGlass, &db, &bg("incident", 600))
            .allow
    );
}

#[test]
fn eligible_approvers_are_sorted_and_follow_policies() {
    let plc = target("plc-gw", &["vendors"], &["ot-leads"], 1, 3600);
    let e = engine(
        r#"@id("night-shift-no")
forbid (principal, action == Action::"approve", resource)
when { principal.kind == "contractor" };
@id("plant-manager")
permit (principal == Principal::"manager", action == Action::"approve", resource == Target::"plc-gw");"#,
        std::slice::from_ref(&plc),
    );
    let people = [
        principal("lead-c", "human", &["ot-leads"]),
        principal("lead-a", "human", &["ot-leads", "vendors"]),
        principal("acme", "vendor", &["vendors"]),
        principal("temp", "contractor", &["ot-leads"]),
        principal("manager", "human", &[]),
        principal("lead-a", "human", &["ot-leads"]),
    ];
    assert_eq!(
        e.eligible_approvers(&people, &plc, &ctx(600)),
        ["lead-a", "lead-c", "manager"]
    );
    assert!(e.eligible_approvers(&[], &plc, &ctx(600)).is_empty());
}

#[test]
fn generated_policies_agree_with_the_target_fields() {
    let targets = [
        target("a", &["g1", "g2", "g1"], &["g3"], 0, 600),
        target("b", &["g2"], &["g1", "g2"], 2, 7200),
        target("c", &[], &[], 5, 60),
        target("we\"ird\\name", &["odd group"], &["odd group"], 1, 100),
    ];
    let e = engine("", &targets);
    assert_eq!(e.user_policies(), 0);
    let groups = ["g1", "g2", "g3", "odd group", "none"];
    for t in &targets {
        for g in groups {
            let p = principal(&format!("member-of-{g}"), "human", &[g]);
            let requester = t.requester_groups.iter().any(|r| r == g);
            let approver = t.approver_groups.iter().any(|r| r == g);
            for ttl in [1, t.max_ttl_s, t.max_ttl_s + 1] {
                let d = e.authorize(&p, Action::Request, t, &ctx(ttl));
                let allowed = requester && ttl <= t.max_ttl_s;
                assert_eq!(d.allow, allowed, "{} {g} {ttl}", t.name);
                if allowed {
                    assert_eq!(d.approvals_required, t.approvals_required);
                    assert_eq!(d.reasons, [format!("target:{}:request:{g}", t.name)]);
                }
            }
            assert_eq!(
                e.authorize(&p, Action::Approve, t, &ctx(60)).allow,
                approver,
                "{} {g}",
                t.name
            );
            for a in [
                Action::End,
                Action::ReadEvidence,
                Action::Admin,
                Action::BreakGlass,
            ] {
                assert!(!e.authorize(&p, a, t, &ctx(60)).allow);
            }
        }
    }
    let src = e.generated_source();
    assert!(
        src.contains("@id(\"target:a:request:g1\")\n@approvals(\"0\")"),
        "{src}"
    );
    assert!(src.contains("when { context.ttl_s <= 7200 }"), "{src}");
    assert_eq!(
        src.matches("target:a:request:g1").count(),
        1,
        "repeated groups generate once"
    );
    assert!(!src.contains("target:c:"), "no groups, no policies");
    // The generated text is itself a valid user-style source (ids aside).
    let reparsed = PolicyEngine::new(&src.replace("@id(\"target:", "@id(\"t:"), &[]).unwrap();
    assert_eq!(reparsed.user_policies(), 8);
}

#[test]
fn nothing_allowed_without_policies_or_targets() {
    let e = engine("", &[]);
    let t = target("x", &[], &[], 0, 60);
    for a in Action::ALL {
        assert_eq!(
            e.authorize(&principal("p", "human", &[]), a, &t, &ctx(1)),
            Decision {
                allow: false,
                approvals_required: 0,
                reasons: vec![]
            }
        );
    }
    assert_eq!(e.generated_source(), "");
    assert!(e.lint(&[], &LintConfig::default()).is_empty());
}

#[test]
fn a_forbid_that_fails_to_evaluate_denies() {
    let t = target("t", &["g"], &[], 0, i64::MAX as u64 + 10);
    // `context.ttl_s + 1` overflows at the largest Long; Cedar would skip the forbid, stint denies.
    let e = engine(
        r#"@id("overflowing-forbid")
forbid (principal, action == Action::"request", resource) when { context.ttl_s + 1 > 100 };"#,
        std::slice::from_ref(&t),
    );
    let p = principal("p", "human", &["g"]);
    let d = e.authorize(&p, Action::Request, &t, &ctx(u64::MAX));
    assert_eq!(
        d,
        Decision {
            allow: false,
            approvals_required: 0,
            reasons: vec!["overflowing-forbid".into()]
        }
    );
    let d = e.authorize(&p, Action::Request, &t, &ctx(150));
    assert_eq!(
        d.reasons,
        ["overflowing-forbid"],
        "evaluates normally: forbidden from 100 on"
    );
    assert!(e.authorize(&p, Action::Request, &t, &ctx(99)).allow);
}

// --- loading --------------------------------------------------------------------------------------

#[test]
fn a_typo_is_refused_with_its_line_and_column() {
    let e = errors("// a comment\npermit (\n    principl, action, resource\n);\n");
    assert_eq!((e[0].line, e[0].column), (3, 5), "{e:#?}");
    assert!(e[0].message.contains("principl"), "{e:#?}");
    // Every error, in order.
    let e = errors(concat!(
        "permit(principal, action, resource);\n\n",
        "permit(\n    principl, action, resource);\n",
        "forbid(principal, actio, resource);",
    ));
    let at: Vec<(u32, u32)> = e.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, [(4, 5), (5, 19)], "{e:#?}");
    // A syntax error.
    let e = errors("permit(principal, action, resource)\n  when { ;");
    assert_eq!(e[0].line, 2, "{e:#?}");
}

#[test]
fn valid_cedar_outside_the_vocabulary_is_refused_by_validation() {
    let e = errors("permit(principal, action, resource)\n  when { principal.department == \"ops\" };");
    assert_eq!((e.len(), e[0].line, e[0].column), (1, 2, 10), "{e:#?}");
    assert!(
        e[0].message.contains("department") && e[0].message.contains("Principal"),
        "{e:#?}"
    );
    let e = errors("permit(principal == User::\"alice\", action, resource);");
    assert!(e[0].message.contains("User"), "{e:#?}");
    let e = errors("permit(principal, action == Action::\"delete\", resource);");
    assert!(e[0].message.contains("delete"), "{e:#?}");
    // A missing context field: one error, not one per action.
    let e = errors("permit(principal, action, resource)\n  when { context.nonexistent == 1 };\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (2, 10));
    // Strict mode: comparing a Long with a String is a type error.
    let e = errors("permit(principal, action, resource) when { context.ttl_s == \"600\" };");
    assert!(!e.is_empty());
}

#[test]
fn ids_come_from_the_id_annotation_or_source_order() {
    let t = target("t", &[], &[], 0, 60);
    let e = engine(
        "permit(principal, action == Action::\"end\", resource);\n@id(\"named\") permit(principal, action == \
         Action::\"admin\", resource);\npermit(principal, action == Action::\"read_evidence\", resource);",
        std::slice::from_ref(&t),
    );
    assert_eq!(e.user_policy_ids(), ["policy0", "named", "policy2"]);
    assert_eq!(e.user_policies(), 3);
    let p = principal("p", "human", &[]);
    assert_eq!(e.authorize(&p, Action::Admin, &t, &ctx(1)).reasons, ["named"]);
    assert_eq!(
        e.authorize(&p, Action::ReadEvidence, &t, &ctx(1)).reasons,
        ["policy2"]
    );
}

#[test]
fn duplicate_reserved_and_bad_annotations_are_refused_where_they_are() {
    let e = errors(concat!(
        "@id(\"x\")\npermit(principal, action, resource);\n\n",
        "  @id(\"x\")\npermit(principal, action, resource);",
    ));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (4, 3));
    assert!(e[0].message.contains("duplicate policy id `x`"), "{e:#?}");
    // A default id taken by an annotation is a duplicate too.
    let e =
        errors("@id(\"policy1\") permit(principal, action, resource);\npermit(principal, action, resource);");
    assert!(e[0].message.contains("duplicate"), "{e:#?}");
    let e = errors("@id(\"target:plc-gw:request:vendors\") permit(principal, action, resource);");
    assert!(e[0].message.contains("reserved"), "{e:#?}");
    let e = errors("@id(\"\") permit(principal, action, resource);");
    assert!(e[0].message.contains("empty"), "{e:#?}");
    let e = errors(concat!(
        "permit(principal, action, resource);\n",
        "@id(\"a\") @approvals(\"two\")\npermit(principal, action, resource);",
    ));
    assert_eq!((e[0].line, e[0].column), (2, 10), "{e:#?}");
    assert!(e[0].message.contains("two"), "{e:#?}");
    let e = errors("@approvals(\"-1\") permit(principal, action, resource);");
    assert_eq!(e.len(), 1, "{e:#?}");
    let e = errors("@approvals(\"1\") forbid(principal, action, resource);");
    assert!(e[0].message.contains("permit"), "{e:#?}");
    let e = errors("\npermit(principal == ?principal, action, resource);");
    assert_eq!((e[0].line, e[0].column), (2, 1), "{e:#?}");
    assert!(e[0].message.contains("templates"), "{e:#?}");
    // Errors of several kinds come together, sorted.
    let e = errors(concat!(
        "@id(\"a\") permit(principal, action, resource);\n",
        "@id(\"a\") permit(principal, action, resource) when { context.nope };",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].line == 2 && e[0].column == 1 && e[1].column > 1, "{e:#?}");
}

#[test]
fn the_hash_is_the_sha256_of_the_source_exactly() {
    let t = [target("t", &["g"], &[], 0, 60)];
    let empty = engine("", &t);
    assert_eq!(
        empty.hash(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        engine("", &[]).hash(),
        empty.hash(),
        "targets do not change the hash"
    );
    let src = "permit(principal, action == Action::\"end\", resource);";
    let a = engine(src, &t);
    assert_eq!(a.hash(), engine(src, &[]).hash());
    assert_eq!(a.hash(), a.clone().hash());
    assert_ne!(
        a.hash(),
        engine(&format!("{src}\n"), &t).hash(),
        "whitespace counts"
    );
    assert_eq!(a.hash().len(), 64);
    assert_eq!(a.user_policies(), 1);
}

#[test]
fn the_engine_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shared::<PolicyEngine>();
}

#[test]
fn the_schema_is_the_published_vocabulary() {
    for word in [
        "entity Group;",
        "entity Principal in [Group]",
        "tags: Set<String>",
        "type Ctx",
        "weekday: String",
        "\"break_glass\"",
        "\"read_evidence\"",
    ] {
        assert!(SCHEMA.contains(word), "{word}");
    }
    for a in Action::ALL {
        assert_eq!(Action::from_id(a.as_str()), Some(a));
        assert!(SCHEMA.contains(&format!("\"{}\"", a.as_str())));
    }
}

// --- lint ----------------------------------------------------------------------------------------

fn notify() -> LintConfig {
    LintConfig {
        break_glass_notify: true,
        ..LintConfig::default()
    }
}

#[test]
fn a_clean_configuration_has_no_findings() {
    let targets = [
        target("api", &["deployers"], &["ops"], 1, 3600),
        TargetInfo {
            environment: Some("production".into()),
            ..target("db", &["dbas"], &["dba-leads"], 1, 28_800)
        },
    ];
    let src = r#"
@id("dbas-short") @approvals("2")
permit (principal in Group::"dbas", action == Action::"request", resource == Target::"db")
when { context.ttl_s <= 3600 };
@id("bg") permit (principal in Group::"dbas", action == Action::"break_glass", resource == Target::"db")
when { context.binding.kind == "incident" };
forbid (principal, action, resource) when { context.reason == "" };
"#;
    let e = engine(src, &targets);
    assert_eq!(e.lint(&targets, &notify()), []);
}

#[test]
fn lint_finds_each_class() {
    let targets = [
        target("forever", &["deployers"], &["ops"], 1, 7 * 86_400),
        TargetInfo {
            tags: vec!["Production".into()],
            ..target("prod-db", &["deployers"], &[], 0, 3600)
        },
        TargetInfo {
            environment: Some("prod".into()),
            ..target("prod-api", &[], &["ops"], 0, 3600)
        },
        target("overlap", &["ops", "devs"], &["devs", "ops"], 1, 3600),
        target("short", &[], &["ops"], 1, 600),
    ];
    let src = r#"
@id("unbounded")
permit (principal in Group::"deployers", action == Action::"request", resource == Target::"forever");
@id("leans-on-target")
permit (principal in Group::"ops", action == Action::"request", resource == Target::"short");
@id("weak-bound")
permit (principal in Group::"ops", action in [Action::"request", Action::"approve"], resource)
when { context.ttl_s <= 86400 };
@id("approved-prod-api") @approvals("1")
permit (principal in Group::"ops", action == Action::"request", resource == Target::"prod-api")
when { context.ttl_s <= 600 };
@id("bg-no-notify")
permit (principal, action == Action::"break_glass", resource == Target::"prod-db");
@id("anything")
permit (principal == Principal::"root", action, resource == Target::"short");
@id("ghost")
permit (principal, action == Action::"request", resource == Target::"no-such-target");
@id("typo-group")
permit (principal in Group::"opz", action == Action::"approve", resource == Target::"short");
@id("never")
forbid (principal, action, resource) when { false };
@id("impossible")
permit (principal == Target::"short", action == Action::"end", resource);
"#;
    let e = engine(src, &targets);
    let cfg = LintConfig {
        break_glass_max_ttl_s: 0,
        ..LintConfig::default()
    };
    let findings = e.lint(&targets, &cfg);
    let got: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.severity.as_str(), f.subject.as_str()))
        .collect();
    let want = [
        // 3: production targets without approvals (not prod-api: its permit carries @approvals).
        ("high", "policy anything"), // 4: unconstrained action permits break_glass (no cap, no notification)
        ("high", "policy bg-no-notify"), // 4
        ("high", "target prod-db"),  // 3
        ("medium", "policy ghost"),  // 6: no such target
        ("medium", "policy impossible"), // 6: Cedar's validator warns
        ("medium", "policy never"),  // 6: when { false }
        ("medium", "policy unbounded"), // 2: no ttl bound, target allows 7 days
        ("medium", "policy weak-bound"), // 2: bound above 8 h on `forever`
        ("medium", "target forever"), // 1
        ("medium", "target overlap"), // 5
        ("low", "policy anything"),  // 2: no bound, leans on `short`'s max_ttl_s
        ("low", "policy leans-on-target"), // 2
        ("low", "policy typo-group"), // 6: unknown group
    ];
    assert_eq!(got, want, "{findings:#?}");
    for f in &findings {
        assert!(!f.message.is_empty() && !f.fix.is_empty(), "{f:?}");
    }
    let text = |subject: &str| {
        findings
            .iter()
            .filter(|f| f.subject == subject)
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert!(
        text("policy anything").contains("unconstrained"),
        "{}",
        text("policy anything")
    );
    assert!(
        text("policy bg-no-notify").contains("no TTL cap")
            && text("policy bg-no-notify").contains("notified")
    );
    assert!(
        text("target overlap").contains("`devs`, `ops`"),
        "{}",
        text("target overlap")
    );
    assert!(
        text("policy weak-bound").contains("86400"),
        "{}",
        text("policy weak-bound")
    );
    assert!(
        text("policy impossible").contains("Cedar's validator warns"),
        "{}",
        text("policy impossible")
    );
    assert!(text("policy never").contains("never") || text("policy never").contains("impossible"));
    // With the server's defaults (capped, notified) the break-glass findings go.
    let calm = e.lint(&targets, &notify());
    assert!(
        !calm.iter().any(|f| f.message.contains("break-glass")),
        "{calm:#?}"
    );
}

// --- the worked example of docs/policies.md ---------------------------------------------------------

const SEED: &str = include_str!("../examples/seed-policies.cedar");

/// The targets the example's header describes.
fn seed_targets() -> Vec<TargetInfo> {
    let env = |t: TargetInfo, e: &str| TargetInfo {
        environment: Some(e.into()),
        ..t
    };
    vec![
        env(target("plc-gw", &[], &["ot-leads"], 1, 14_400), "ot"),
        env(
            target("secrets-vault", &[], &["oncall-leads"], 1, 28_800),
            "production",
        ),
        env(target("deploy-prod", &[], &[], 0, 3600), "production"),
        TargetInfo {
            kind: "postgres".into(),
            ..env(
                target("db-prod", &["dbas"], &["dba-leads"], 1, 14_400),
                "production",
            )
        },
    ]
}

#[test]
fn the_worked_example_allows_and_denies_each_seed_use_case() {
    let targets = seed_targets();
    let e = engine(SEED, &targets);
    assert_eq!(e.user_policies(), 6);
    let [plc, vault, deploy, db] = [&targets[0], &targets[1], &targets[2], &targets[3]];
    let allow = |approvals: u32, id: &str| Decision {
        allow: true,
        approvals_required: approvals,
        reasons: vec![id.into()],
    };
    let deny = |ids: &[&str]| Decision {
        allow: false,
        approvals_required: 0,
        reasons: ids.iter().map(|s| (*s).into()).collect(),
    };
    let when = |c: RequestContext, day: &str, h: u8| RequestContext {
        time: at(day, h, 30),
        ..c
    };

    // (1) OT vendor: ticket-bound, inside the window, two approvals from ot-leads.
    let vendor = principal("acme-vendor", "vendor", &["ot-vendors"]);
    let ticket = bound(ctx(3600), "ticket", "OT-4711");
    assert_eq!(
        e.authorize(&vendor, Action::Request, plc, &when(ticket.clone(), "Tue", 7)),
        allow(2, "ot-vendor-ticket")
    );
    assert_eq!(
        e.authorize(&vendor, Action::Request, plc, &when(ticket.clone(), "Mon", 7)),
        deny(&["ot-maintenance-window"])
    );
    assert_eq!(
        e.authorize(&vendor, Action::Request, plc, &when(ticket.clone(), "Wed", 10)),
        deny(&["ot-maintenance-window"])
    );
    assert_eq!(
        e.authorize(&vendor, Action::Request, plc, &when(ctx(3600), "Tue", 7)),
        deny(&[]),
        "no ticket"
    );
    let people = [
        principal("lead-b", "human", &["ot-leads"]),
        principal("lead-a", "human", &["ot-leads"]),
        vendor.clone(),
        principal("oncall-1", "human", &["oncall-leads"]),
    ];
    assert_eq!(e.eligible_approvers(&people, plc, &ticket), ["lead-a", "lead-b"]);

    // (2) Incident responder: incident-bound, at most 4 h, one approval from the on-call leads.
    let responder = principal("rita", "human", &["incident-responders"]);
    let incident = |ttl| bound(ctx(ttl), "incident", "INC-1234");
    assert_eq!(
        e.authorize(&responder, Action::Request, vault, &incident(14_400)),
        allow(1, "ir-secrets-incident")
    );
    assert_eq!(
        e.authorize(&responder, Action::Request, vault, &incident(14_401)),
        deny(&[])
    );
    assert_eq!(
        e.authorize(
            &responder,
            Action::Request,
            vault,
            &bound(ctx(600), "ticket", "T-1")
        ),
        deny(&[])
    );
    assert_eq!(e.eligible_approvers(&people, vault, &incident(600)), ["oncall-1"]);

    // (3) CI job: pipeline-bound, at most 30 min, no approval; nobody else.
    let ci = principal("ci-deployer", "ci_job", &["deployers"]);
    let run = |ttl| bound(ctx(ttl), "pipeline", "build-981");
    assert_eq!(
        e.authorize(&ci, Action::Request, deploy, &run(1800)),
        allow(0, "ci-deploy-pipeline")
    );
    assert_eq!(e.authorize(&ci, Action::Request, deploy, &run(1801)), deny(&[]));
    let dev = principal("dave", "human", &["deployers"]);
    assert_eq!(
        e.authorize(&dev, Action::Request, deploy, &run(600)),
        deny(&["deploy-prod-ci-only"])
    );

    // (4) AI agent: break-glass on db-prod only for an incident, at most 30 min; no ordinary requests.
    let agent = principal("ops-agent", "agent", &["sre-agents"]);
    let bg = |kind: &str, ttl| RequestContext {
        break_glass: true,
        ..bound(ctx(ttl), kind, "INC-1235")
    };
    assert_eq!(
        e.authorize(&agent, Action::BreakGlass, db, &bg("incident", 1800)),
        allow(0, "agent-break-glass-outage")
    );
    assert_eq!(
        e.authorize(&agent, Action::BreakGlass, db, &bg("ticket", 600)),
        deny(&[])
    );
    assert_eq!(
        e.authorize(&agent, Action::BreakGlass, db, &bg("incident", 3600)),
        deny(&[])
    );
    assert_eq!(
        e.authorize(&agent, Action::Request, db, &incident(600)),
        deny(&[])
    );
    let dba = principal("dana", "human", &["dbas"]);
    assert_eq!(
        e.authorize(&dba, Action::Request, db, &ctx(600)),
        allow(1, "target:db-prod:request:dbas")
    );
    assert_eq!(
        e.authorize(&dba, Action::BreakGlass, db, &bg("incident", 600)),
        deny(&[])
    );
}

#[test]
fn the_worked_example_lints_as_documented() {
    let targets = seed_targets();
    let e = engine(SEED, &targets);
    let findings = e.lint(&targets, &notify());
    let got: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.severity.as_str(), f.subject.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("high", "target deploy-prod"),
            ("low", "policy agent-break-glass-outage"),
            ("low", "policy ci-deploy-pipeline"),
            ("low", "policy ir-secrets-incident"),
            ("low", "policy ot-vendor-ticket"),
        ],
        "{findings:#?}"
    );
    // Without a notification webhook, the break-glass permit is flagged too.
    let loud = e.lint(&targets, &LintConfig::default());
    assert!(
        loud.iter()
            .any(|f| f.severity == "high" && f.subject == "policy agent-break-glass-outage")
    );
}

#[test]
fn the_docs_show_the_schema_and_the_worked_example_unchanged() {
    let doc = include_str!("../../../docs/policies.md");
    assert!(doc.contains(SCHEMA), "docs/policies.md must show SCHEMA verbatim");
    assert!(
        doc.contains(SEED),
        "docs/policies.md must show examples/seed-policies.cedar verbatim"
    );
}
