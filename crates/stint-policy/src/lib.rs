//! stint's policy layer: the Cedar vocabulary of stint, the policies generated from targets' simple
//! fields, authorization decisions with the ids of the policies that made them, and a lint for
//! "session-bound in name only" configurations.
//!
//! The crate is pure: no I/O, no async, no clock. The server passes everything in (the policy source
//! text, the targets, the principal, the local time as [`TimeParts`]) and gets plain values back.
//! Every decision is Cedar's: default deny, a matching `forbid` beats any `permit`.
//!
//! ```
//! use stint_policy::{Action, PolicyEngine, PrincipalInfo, RequestContext, TargetInfo, time_parts};
//!
//! let target = TargetInfo {
//!     name: "plc-gw".into(),
//!     kind: "jwt".into(),
//!     environment: None,
//!     tags: vec![],
//!     requester_groups: vec!["vendors".into()],
//!     approver_groups: vec!["ot-leads".into()],
//!     approvals_required: 1,
//!     max_ttl_s: 3600,
//! };
//! let engine = PolicyEngine::new("", std::slice::from_ref(&target)).map_err(|e| format!("{e:?}"))?;
//! let vendor = PrincipalInfo { name: "acme".into(), kind: "vendor".into(), groups: vec!["vendors".into()] };
//! let ctx = RequestContext {
//!     ttl_s: 600,
//!     reason: "firmware update".into(),
//!     binding_kind: String::new(),
//!     binding_ref: String::new(),
//!     break_glass: false,
//!     time: time_parts(1_764_567_000, time::UtcOffset::UTC),
//! };
//! let d = engine.authorize(&vendor, Action::Request, &target, &ctx);
//! assert!(d.allow);
//! assert_eq!(d.approvals_required, 1);
//! assert_eq!(d.reasons, ["target:plc-gw:request:vendors"]);
//! # Ok::<(), String>(())
//! ```

mod analysis;
mod engine;
mod error;
mod generate;
mod lint;
mod local_time;

pub use engine::PolicyEngine;
pub use error::PolicyError;
pub use lint::{Finding, LintConfig};
pub use local_time::{TimeParts, time_parts};

/// The Cedar schema every policy is validated against (Cedar's human-readable schema syntax).
///
/// Entity ids are names: `Principal::"ci-deployer"`, `Group::"ot-leads"`, `Target::"plc-gw"`. Every action
/// applies to a `Principal` on a `Target` and sees the same context record `Ctx`.
pub const SCHEMA: &str = r#"// stint's policy vocabulary.

// A group a principal belongs to (from the principal's `groups`).
entity Group;

// A human or non-human identity; its parents are its groups.
entity Principal in [Group] {
  name: String,   // the principal's name (also its entity id)
  kind: String,   // e.g. "human", "ci_job", "agent", "vendor"
};

// Something sessions are opened on.
entity Target {
  name: String,          // the target's name (also its entity id)
  kind: String,          // the provider kind, e.g. "jwt", "postgres", "ssh"
  environment: String,   // "" when unset
  tags: Set<String>,
};

// The context of every action.
type Ctx = {
  ttl_s: Long,              // the requested session length in seconds
  reason: String,           // the requester's stated reason
  binding: {                // the activity the session is bound to; "" and "" when unbound
    kind: String,           // "ticket", "incident", "pipeline", "process"
    ref: String,            // e.g. "OT-4711"
  },
  break_glass: Bool,        // true for a break-glass request
  time: {                   // the local time of the decision (the server's configured UTC offset)
    hour: Long,             // 0..23
    minute: Long,           // 0..59
    weekday: String,        // "Mon" .. "Sun"
  },
};

action "request", "approve", "end", "break_glass", "read_evidence", "admin" appliesTo {
  principal: [Principal],
  resource: [Target],
  context: Ctx,
};
"#;

/// A target as policies see it: the entity's attributes plus the simple fields that generate policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// Its name, also the Cedar entity id (`Target::"plc-gw"`).
    pub name: String,
    /// Provider kind (`jwt`, `postgres`, `ssh`, …).
    pub kind: String,
    /// Environment (`production`, `ot`, …); policies see `""` when unset.
    pub environment: Option<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Groups whose members may request sessions (each becomes a generated `request` permit).
    pub requester_groups: Vec<String>,
    /// Groups whose members may approve (each becomes a generated `approve` permit).
    pub approver_groups: Vec<String>,
    /// The floor of approvals for every allowed request on this target.
    pub approvals_required: u32,
    /// The longest session; generated request permits require `context.ttl_s` at most this.
    pub max_ttl_s: u64,
}

/// A principal as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalInfo {
    /// Its name, also the Cedar entity id (`Principal::"ci-deployer"`).
    pub name: String,
    /// Its kind (`human`, `ci_job`, `agent`, …).
    pub kind: String,
    /// Its groups: the entity's parents (`principal in Group::"ot-leads"`).
    pub groups: Vec<String>,
}

/// The actions of the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Ask for a session.
    Request,
    /// Approve someone else's request.
    Approve,
    /// End a session.
    End,
    /// Ask for a break-glass session (no approval, capped, notified, reviewed).
    BreakGlass,
    /// Read a session's evidence.
    ReadEvidence,
    /// Administer a target.
    Admin,
}

impl Action {
    /// Every action, in schema order.
    pub const ALL: [Action; 6] = [
        Action::Request,
        Action::Approve,
        Action::End,
        Action::BreakGlass,
        Action::ReadEvidence,
        Action::Admin,
    ];

    /// The Cedar action id: `Action::"<as_str>"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::Approve => "approve",
            Action::End => "end",
            Action::BreakGlass => "break_glass",
            Action::ReadEvidence => "read_evidence",
            Action::Admin => "admin",
        }
    }

    /// The action with this Cedar id.
    pub fn from_id(id: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == id)
    }
}

/// What is being asked, and when: the Cedar `context` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The requested session length in seconds (`context.ttl_s`).
    pub ttl_s: u64,
    /// The stated reason (`context.reason`).
    pub reason: String,
    /// The binding's kind, `""` when unbound (`context.binding.kind`).
    pub binding_kind: String,
    /// The binding's reference, `""` when unbound (`context.binding.ref`).
    pub binding_ref: String,
    /// A break-glass request (`context.break_glass`).
    pub break_glass: bool,
    /// The local time of the decision (`context.time`).
    pub time: TimeParts,
}

/// An authorization decision and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Cedar said allow.
    pub allow: bool,
    /// For an allowed [`Action::Request`]: the approvals needed (largest `@approvals` of the permits that
    /// matched, at least the target's `approvals_required`); 0 otherwise.
    pub approvals_required: u32,
    /// Ids of the policies that determined the decision, sorted: the matching permits of an allow, the
    /// matching forbids of a deny; empty for a default deny (nothing matched).
    pub reasons: Vec<String>,
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests;
