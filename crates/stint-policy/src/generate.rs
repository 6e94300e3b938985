//! The policies generated from targets' simple fields, so that `requester_groups`, `approver_groups`,
//! `approvals_required` and `max_ttl_s` keep working and agree with user policies.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::TargetInfo;

/// Prefix of every generated policy id; user policies may not use it.
pub(crate) const RESERVED_PREFIX: &str = "target:";

/// The Cedar text for `targets`: per target, one `request` permit per requester group (with the target's
/// approvals floor and TTL bound) and one `approve` permit per approver group. Nothing for `end`,
/// `read_evidence`, `admin` or `break_glass`: the server keeps its own rules for the first three, and
/// break-glass is only ever allowed by an explicit user permit.
pub(crate) fn generated_source(targets: &[TargetInfo]) -> String {
    let mut out = String::new();
    for t in targets {
        let name = literal(&t.name);
        // Cedar's Long is an i64; a larger bound means "no bound" anyway.
        let max = i64::try_from(t.max_ttl_s).unwrap_or(i64::MAX);
        let mut seen = HashSet::new();
        for g in t.requester_groups.iter().filter(|g| seen.insert(g.as_str())) {
            let id = literal(&format!("{RESERVED_PREFIX}{}:request:{g}", t.name));
            let _ = writeln!(
                out,
                "@id(\"{id}\")\n@approvals(\"{}\")\npermit (\n  principal in Group::\"{}\",\n  \
                 action == Action::\"request\",\n  resource == Target::\"{name}\"\n)\n\
                 when {{ context.ttl_s <= {max} }};\n",
                t.approvals_required,
                literal(g),
            );
        }
        let mut seen = HashSet::new();
        for g in t.approver_groups.iter().filter(|g| seen.insert(g.as_str())) {
            let id = literal(&format!("{RESERVED_PREFIX}{}:approve:{g}", t.name));
            let _ = writeln!(
                out,
                "@id(\"{id}\")\npermit (\n  principal in Group::\"{}\",\n  action == Action::\"approve\",\n  \
                 resource == Target::\"{name}\"\n);\n",
                literal(g),
            );
        }
    }
    out
}

/// The body of a Cedar string literal for `s`: quotes, backslashes and control characters escaped.
pub(crate) fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}
