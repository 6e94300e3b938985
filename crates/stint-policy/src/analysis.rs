//! What the lint needs to know about one user policy, read once at load time from Cedar's scope API and
//! the policy's JSON form (Cedar's stable EST format).

use cedar_policy::{ActionConstraint, Effect, EntityUid, Policy, PrincipalConstraint, ResourceConstraint};
use serde_json::Value;

use crate::Action;

/// A user policy, summarized.
#[derive(Debug, Clone)]
pub(crate) struct PolicyMeta {
    /// Its id (`@id` or `policyN`).
    pub id: String,
    /// `permit` (else `forbid`).
    pub permit: bool,
    /// The actions its scope allows; `None` when the action is unconstrained.
    pub actions: Option<Vec<Action>>,
    /// The entity its principal scope names (`principal == X`, `principal in X`, `… is T in X`), as
    /// (type, id).
    pub principal: Option<(String, String)>,
    /// The entity its resource scope names, as (type, id); `None` when any target matches.
    pub resource: Option<(String, String)>,
    /// The smallest `context.ttl_s` bound it imposes, if any (see [`ttl_bound`]).
    pub ttl_bound: Option<i64>,
    /// A `when { false }` or `unless { true }` condition: it can never match.
    pub literally_false: bool,
    /// Its `@approvals` annotation.
    pub approvals: Option<u32>,
}

impl PolicyMeta {
    pub(crate) fn new(id: String, p: &Policy, approvals: Option<u32>) -> Self {
        let actions = match p.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(a) => Some(action_of(&a).into_iter().collect()),
            ActionConstraint::In(list) => Some(list.iter().filter_map(action_of).collect()),
        };
        let principal = match p.principal_constraint() {
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
            PrincipalConstraint::In(u) | PrincipalConstraint::Eq(u) | PrincipalConstraint::IsIn(_, u) => {
                Some(parts(&u))
            }
        };
        let resource = match p.resource_constraint() {
            ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
            ResourceConstraint::In(u) | ResourceConstraint::Eq(u) | ResourceConstraint::IsIn(_, u) => {
                Some(parts(&u))
            }
        };
        let conditions = p
            .to_json()
            .ok()
            .and_then(|j| j.get("conditions").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        Self {
            id,
            permit: p.effect() == Effect::Permit,
            actions,
            principal,
            resource,
            ttl_bound: conditions.iter().filter_map(ttl_bound).min(),
            literally_false: conditions.iter().any(literally_false),
            approvals,
        }
    }

    /// Its scope lets it apply to `a`.
    pub(crate) fn applies_to(&self, a: Action) -> bool {
        self.actions.as_ref().is_none_or(|list| list.contains(&a))
    }

    /// Its scope lets it apply to the target named `name`.
    pub(crate) fn covers_target(&self, name: &str) -> bool {
        match &self.resource {
            None => true,
            Some((ty, id)) => ty == "Target" && id == name,
        }
    }
}

fn action_of(u: &EntityUid) -> Option<Action> {
    Action::from_id(u.id().unescaped())
}

fn parts(u: &EntityUid) -> (String, String) {
    (u.type_name().to_string(), u.id().unescaped().to_owned())
}

/// The bound a condition puts on `context.ttl_s`: a comparison of `context.ttl_s` with a number
/// (`<=`, `<`, `==`, either side) that is one of the `&&`-joined parts of a `when`, or one of the
/// `||`-joined parts of an `unless` in the negated form (`context.ttl_s > N`). A comparison under `||`,
/// `!` or `if` in a `when` does not count: it would not bound every request the policy matches.
fn ttl_bound(condition: &Value) -> Option<i64> {
    let body = condition.get("body")?;
    match condition.get("kind")?.as_str()? {
        "when" => flatten(body, "&&")
            .into_iter()
            .filter_map(|e| upper_bound(e, false))
            .min(),
        "unless" => flatten(body, "||")
            .into_iter()
            .filter_map(|e| upper_bound(e, true))
            .min(),
        _ => None,
    }
}

fn flatten<'a>(e: &'a Value, op: &str) -> Vec<&'a Value> {
    match e.get(op) {
        Some(both) => {
            let mut out = Vec::new();
            for side in ["left", "right"] {
                if let Some(s) = both.get(side) {
                    out.extend(flatten(s, op));
                }
            }
            out
        }
        None => vec![e],
    }
}

/// `context.ttl_s <= N` (or `N >= context.ttl_s`, `<`, `==`) gives N (N-1 for `<`); negated: the
/// condition that must be false, `context.ttl_s > N` gives N.
fn upper_bound(e: &Value, negated: bool) -> Option<i64> {
    let obj = e.as_object()?;
    let (op, args) = obj.iter().next()?;
    let (left, right) = (args.get("left")?, args.get("right")?);
    // Normalize to `context.ttl_s OP n`.
    let (op, n) = if is_ttl(left) {
        (op.as_str(), long(right)?)
    } else if is_ttl(right) {
        let flipped = match op.as_str() {
            "<" => ">",
            "<=" => ">=",
            ">" => "<",
            ">=" => "<=",
            other => other,
        };
        (flipped, long(left)?)
    } else {
        return None;
    };
    match (negated, op) {
        (false, "<=" | "==") | (true, ">") => Some(n),
        (false, "<") | (true, ">=") => Some(n.saturating_sub(1)),
        _ => None,
    }
}

fn is_ttl(e: &Value) -> bool {
    e.get(".").is_some_and(|dot| {
        dot.get("attr").and_then(Value::as_str) == Some("ttl_s")
            && dot.get("left").and_then(|l| l.get("Var")).and_then(Value::as_str) == Some("context")
    })
}

fn long(e: &Value) -> Option<i64> {
    e.get("Value")?.as_i64()
}

fn literally_false(condition: &Value) -> bool {
    let body = condition
        .get("body")
        .and_then(|b| b.get("Value"))
        .and_then(Value::as_bool);
    match condition.get("kind").and_then(Value::as_str) {
        Some("when") => body == Some(false),
        Some("unless") => body == Some(true),
        _ => false,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn meta(src: &str) -> PolicyMeta {
        PolicyMeta::new("p".into(), &Policy::parse(None, src).unwrap(), None)
    }

    #[test]
    fn ttl_bounds_count_only_when_every_match_is_bounded() {
        let cases = [
            ("when { context.ttl_s <= 1800 }", Some(1800)),
            ("when { 1800 >= context.ttl_s }", Some(1800)),
            ("when { context.ttl_s < 1800 }", Some(1799)),
            (
                "when { principal.kind == \"ci_job\" && context.ttl_s <= 600 && true }",
                Some(600),
            ),
            (
                "when { context.ttl_s <= 3600 } when { context.ttl_s <= 600 }",
                Some(600),
            ),
            ("unless { context.ttl_s > 900 }", Some(900)),
            (
                "unless { principal.kind == \"x\" || context.ttl_s >= 901 }",
                Some(900),
            ),
            (
                "when { context.ttl_s <= 600 || principal.kind == \"agent\" }",
                None,
            ),
            ("when { !(context.ttl_s > 600) }", None),
            ("when { context.ttl_s >= 600 }", None),
            ("when { context.reason != \"\" }", None),
            ("", None),
        ];
        for (cond, want) in cases {
            let m = meta(&format!(
                "permit(principal, action == Action::\"request\", resource) {cond};"
            ));
            assert_eq!(m.ttl_bound, want, "{cond}");
        }
    }

    #[test]
    fn scope_and_never_matching_conditions() {
        let m = meta(
            "forbid(principal in Group::\"ops\", action in [Action::\"request\", Action::\"break_glass\"], \
             resource == Target::\"db\") when { false };",
        );
        assert!(!m.permit && m.literally_false);
        assert_eq!(m.actions, Some(vec![Action::Request, Action::BreakGlass]));
        assert_eq!(m.principal, Some(("Group".into(), "ops".into())));
        assert_eq!(m.resource, Some(("Target".into(), "db".into())));
        assert!(m.covers_target("db") && !m.covers_target("other"));
        let any = meta("permit(principal, action, resource) unless { true };");
        assert!(any.literally_false && any.applies_to(Action::Admin) && any.covers_target("x"));
        assert!(!meta("permit(principal, action, resource) when { true };").literally_false);
    }
}
