//! "Session-bound in name only": configurations whose sessions are long, unapproved, self-approved,
//! unnotified, or whose policies can never match.

use std::collections::{BTreeMap, BTreeSet};

use crate::analysis::PolicyMeta;
use crate::engine::Warning;
use crate::{Action, TargetInfo};

/// What the lint compares against (the server fills it from its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintConfig {
    /// Sessions longer than this are "long" (default 8 h).
    pub max_ttl_s: u64,
    /// The server's cap on break-glass sessions; 0 means no cap (default 1800, the server's default).
    pub break_glass_max_ttl_s: u64,
    /// Approvers are notified of break-glass sessions (a webhook is configured; default false, as the
    /// server has none until one is set).
    pub break_glass_notify: bool,
}

impl Default for LintConfig {
    fn default() -> Self {
        Self {
            max_ttl_s: 8 * 3600,
            break_glass_max_ttl_s: 1800,
            break_glass_notify: false,
        }
    }
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `"high"`, `"medium"` or `"low"`.
    pub severity: String,
    /// `"policy <id>"` or `"target <name>"`.
    pub subject: String,
    /// What is wrong and why it matters.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    High,
    Medium,
    Low,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

struct Out(Vec<(Severity, Finding)>);

impl Out {
    fn push(&mut self, severity: Severity, subject: String, message: String, fix: String) {
        let finding = Finding {
            severity: severity.as_str().to_owned(),
            subject,
            message,
            fix,
        };
        self.0.push((severity, finding));
    }
}

/// Every finding, most severe first, then by subject.
pub(crate) fn lint(
    user: &[PolicyMeta],
    warnings: &[Warning],
    targets: &[TargetInfo],
    cfg: &LintConfig,
) -> Vec<Finding> {
    let mut out = Out(Vec::new());
    long_targets(targets, cfg, &mut out);
    unbounded_requests(user, targets, cfg, &mut out);
    unapproved_production(user, targets, &mut out);
    unguarded_break_glass(user, cfg, &mut out);
    self_approval(targets, &mut out);
    never_matching(user, warnings, targets, &mut out);
    let mut v = out.0;
    v.sort_by(|a, b| (a.0, &a.1.subject, &a.1.message).cmp(&(b.0, &b.1.subject, &b.1.message)));
    v.into_iter().map(|(_, f)| f).collect()
}

fn hours(s: u64) -> String {
    if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Class 1: targets whose sessions may last longer than the lint's cap.
fn long_targets(targets: &[TargetInfo], cfg: &LintConfig, out: &mut Out) {
    for t in targets.iter().filter(|t| t.max_ttl_s > cfg.max_ttl_s) {
        out.push(
            Severity::Medium,
            format!("target {}", t.name),
            format!(
                "sessions on `{}` may last {} (`max_ttl_s` {}), longer than {}: a credential that outlives \
                 the work it was granted for is standing access in all but name",
                t.name,
                hours(t.max_ttl_s),
                t.max_ttl_s,
                hours(cfg.max_ttl_s)
            ),
            format!("lower `max_ttl_s` of `{}` to at most {}", t.name, cfg.max_ttl_s),
        );
    }
}

/// Class 2: user `request` permits without a `context.ttl_s` bound (or with one above the cap). Medium
/// when a target they reach allows sessions above the cap, low when they only lean on the targets'
/// `max_ttl_s`.
fn unbounded_requests(user: &[PolicyMeta], targets: &[TargetInfo], cfg: &LintConfig, out: &mut Out) {
    for p in user
        .iter()
        .filter(|p| p.permit && p.applies_to(Action::Request) && !p.literally_false)
    {
        if p.resource.is_some() && !targets.iter().any(|t| p.covers_target(&t.name)) {
            continue; // it names a target that does not exist: class 6 says so
        }
        let bound = p.ttl_bound.map(|b| u64::try_from(b).unwrap_or(0));
        if bound.is_some_and(|b| b <= cfg.max_ttl_s) {
            continue;
        }
        let long: Vec<&str> = targets
            .iter()
            .filter(|t| p.covers_target(&t.name))
            .filter(|t| t.max_ttl_s.min(bound.unwrap_or(u64::MAX)) > cfg.max_ttl_s)
            .map(|t| t.name.as_str())
            .collect();
        let fix = format!(
            "add `when {{ context.ttl_s <= {} }}` (or a tighter bound)",
            cfg.max_ttl_s
        );
        let subject = format!("policy {}", p.id);
        match (bound, long.is_empty()) {
            (_, false) => out.push(
                Severity::Medium,
                subject,
                format!(
                    "request permit `{}` {} so sessions it allows on {} may last longer than {}",
                    p.id,
                    match bound {
                        Some(b) => format!("bounds `context.ttl_s` only at {b},"),
                        None => "does not bound `context.ttl_s`,".to_owned(),
                    },
                    list(&long),
                    hours(cfg.max_ttl_s)
                ),
                fix,
            ),
            (None, true) => out.push(
                Severity::Low,
                subject,
                format!(
                    "request permit `{}` does not bound `context.ttl_s`: it relies on each target's \
                     `max_ttl_s` alone, so raising one silently lengthens its sessions",
                    p.id
                ),
                fix,
            ),
            (Some(_), true) => {}
        }
    }
}

fn is_production(t: &TargetInfo) -> bool {
    let prod = |s: &str| s.eq_ignore_ascii_case("production") || s.eq_ignore_ascii_case("prod");
    t.tags.iter().any(|s| prod(s)) || t.environment.as_deref().is_some_and(prod)
}

/// Class 3: production targets anyone can reach with no approval.
fn unapproved_production(user: &[PolicyMeta], targets: &[TargetInfo], out: &mut Out) {
    for t in targets
        .iter()
        .filter(|t| is_production(t) && t.approvals_required == 0)
    {
        let permits: Vec<&PolicyMeta> = user
            .iter()
            .filter(|p| p.permit && p.applies_to(Action::Request) && p.covers_target(&t.name))
            .collect();
        if permits.iter().any(|p| p.approvals.is_some_and(|n| n >= 1)) {
            continue;
        }
        if t.requester_groups.is_empty() && permits.is_empty() {
            continue; // nobody can request it at all
        }
        out.push(
            Severity::High,
            format!("target {}", t.name),
            format!(
                "production target `{}` needs no approval: `approvals_required` is 0 and no request permit \
                 for it carries `@approvals`, so one identity alone opens sessions on production",
                t.name
            ),
            format!(
                "set `approvals_required` of `{}` to 1 or more, or add `@approvals(\"1\")` to its request \
                 permit",
                t.name
            ),
        );
    }
}

/// Class 4: break-glass permits while break-glass sessions are uncapped or unnotified.
fn unguarded_break_glass(user: &[PolicyMeta], cfg: &LintConfig, out: &mut Out) {
    if cfg.break_glass_max_ttl_s > 0 && cfg.break_glass_notify {
        return;
    }
    let mut gaps = Vec::new();
    if cfg.break_glass_max_ttl_s == 0 {
        gaps.push("break-glass sessions have no TTL cap");
    }
    if !cfg.break_glass_notify {
        gaps.push("approvers are not notified when one starts");
    }
    for p in user
        .iter()
        .filter(|p| p.permit && p.applies_to(Action::BreakGlass) && !p.literally_false)
    {
        let how = if p.actions.is_none() {
            " (its action is unconstrained, so it permits `break_glass` too)"
        } else {
            ""
        };
        out.push(
            Severity::High,
            format!("policy {}", p.id),
            format!(
                "`{}` permits break-glass{how}, but {}: emergency access nobody hears about is a back door",
                p.id,
                gaps.join(" and ")
            ),
            "set `break_glass_max_ttl_s` (e.g. 1800) and `break_glass_webhook_url` with its secret, or \
             remove the permit"
                .to_owned(),
        );
    }
}

/// Class 5: groups that both request and approve on a target.
fn self_approval(targets: &[TargetInfo], out: &mut Out) {
    for t in targets {
        let requesters: BTreeSet<&str> = t.requester_groups.iter().map(String::as_str).collect();
        let both: BTreeSet<&str> = t
            .approver_groups
            .iter()
            .map(String::as_str)
            .filter(|g| requesters.contains(g))
            .collect();
        let both: Vec<&str> = both.into_iter().collect();
        if both.is_empty() {
            continue;
        }
        out.push(
            Severity::Medium,
            format!("target {}", t.name),
            format!(
                "group{} {} both request and approve on `{}`: no one approves their own session, but members \
                 approve each other's, so the group grants itself access",
                if both.len() == 1 { "" } else { "s" },
                list(&both),
                t.name
            ),
            format!("give `{}` approver groups that do not request it", t.name),
        );
    }
}

/// Class 6: policies that can never match: a scope naming a target or group that does not exist, a literal
/// `when { false }`, and what Cedar's validator warns about.
fn never_matching(user: &[PolicyMeta], warnings: &[Warning], targets: &[TargetInfo], out: &mut Out) {
    let names: BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let groups: BTreeSet<&str> = targets
        .iter()
        .flat_map(|t| t.requester_groups.iter().chain(&t.approver_groups))
        .map(String::as_str)
        .collect();
    let mut cedar: BTreeMap<&str, Vec<&Warning>> = BTreeMap::new();
    for w in warnings {
        cedar.entry(w.policy.as_str()).or_default().push(w);
    }
    for p in user {
        let subject = format!("policy {}", p.id);
        if let Some((ty, id)) = &p.resource
            && ty == "Target"
            && !names.contains(id.as_str())
        {
            out.push(
                Severity::Medium,
                subject.clone(),
                format!(
                    "`{}` names target `{id}`, which does not exist: it never matches (a typo?)",
                    p.id
                ),
                format!("name an existing target in `{}`, or remove it", p.id),
            );
        }
        if let Some((ty, id)) = &p.principal
            && ty == "Group"
            && !groups.contains(id.as_str())
        {
            out.push(
                Severity::Low,
                subject.clone(),
                format!(
                    "`{}` names group `{id}`, which no target lists as a requester or approver group; \
                     if that is a typo the policy never matches (the lint cannot see principals' groups)",
                    p.id
                ),
                format!("check the spelling of `{id}`; nothing to do if principals carry it"),
            );
        }
        let cedar_warnings = cedar.remove(p.id.as_str()).unwrap_or_default();
        if p.literally_false && !cedar_warnings.iter().any(|w| w.never_applies) {
            out.push(
                Severity::Medium,
                subject.clone(),
                format!(
                    "`{}` has a condition that is always false: it never matches",
                    p.id
                ),
                format!("remove `{}` or fix its condition", p.id),
            );
        }
        if !cedar_warnings.is_empty() {
            let never = cedar_warnings.iter().any(|w| w.never_applies);
            let mut messages: Vec<&str> = cedar_warnings.iter().map(|w| w.message.as_str()).collect();
            messages.dedup();
            out.push(
                if never { Severity::Medium } else { Severity::Low },
                subject,
                format!("Cedar's validator warns: {}", messages.join("; ")),
                if never {
                    format!("remove `{}` or fix its scope and conditions", p.id)
                } else {
                    format!("rewrite the flagged text of `{}` in plain characters", p.id)
                },
            );
        }
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
