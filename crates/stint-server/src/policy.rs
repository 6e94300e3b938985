//! The service's side of Cedar policies (`stint-policy` holds the language part): the policy set in
//! force (from the API, else `.cedar` files in `policy_dir`, else none), rebuilt whenever targets
//! change because the targets' simple fields become generated policies, and the translation of
//! principals, targets and requests into the policy vocabulary.

use std::path::Path;
use std::sync::Arc;

use stint_core::{Binding, Session};
use stint_policy::{PolicyEngine, PrincipalInfo, RequestContext, TargetInfo};
use stint_store::PrincipalRecord;
use time::OffsetDateTime;

use crate::service::TargetDoc;

/// Where the user policy set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// No user policies: only the generated ones.
    None,
    /// `.cedar` files read at start.
    Files,
    /// `PUT /v1/policies`.
    Api,
}

/// The policy set in force.
#[derive(Clone)]
pub struct PolicyState {
    /// The user source (API or files).
    pub source: String,
    /// Where it came from.
    pub origin: Origin,
    /// The validated engine (user + generated policies).
    pub engine: Arc<PolicyEngine>,
}

impl std::fmt::Debug for PolicyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyState")
            .field("origin", &self.origin)
            .field("hash", &self.engine.hash())
            .finish_non_exhaustive()
    }
}

/// A target in the policy vocabulary.
pub fn target_info(t: &TargetDoc) -> TargetInfo {
    TargetInfo {
        name: t.name.clone(),
        kind: t.kind.as_str().to_owned(),
        environment: t.environment.clone(),
        tags: t.tags.clone(),
        requester_groups: t.requester_groups.clone(),
        approver_groups: t.approver_groups.clone(),
        approvals_required: t.approvals_required,
        max_ttl_s: t.max_ttl_s,
    }
}

/// A principal in the policy vocabulary.
pub fn principal_info(p: &PrincipalRecord) -> PrincipalInfo {
    PrincipalInfo {
        name: p.name.clone(),
        kind: p.kind.clone(),
        groups: p.groups.clone(),
    }
}

fn kind_name(b: &Binding) -> String {
    serde_json::to_value(b.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The request context: what is asked, and when (local time in the configured offset).
pub fn context(
    ttl_s: u64,
    reason: &str,
    binding: &Binding,
    break_glass: bool,
    now: OffsetDateTime,
    offset: time::UtcOffset,
) -> RequestContext {
    RequestContext {
        ttl_s,
        reason: reason.to_owned(),
        binding_kind: if binding.reference.is_some() {
            kind_name(binding)
        } else {
            String::new()
        },
        binding_ref: binding.reference.clone().unwrap_or_default(),
        break_glass,
        time: stint_policy::time_parts(now.unix_timestamp(), offset),
    }
}

/// The context of an existing session (for approving, ending, reading its evidence).
pub fn session_context(s: &Session, now: OffsetDateTime, offset: time::UtcOffset) -> RequestContext {
    context(s.ttl_s, &s.reason, &s.binding, s.break_glass, now, offset)
}

/// Reads every `.cedar` file of `dir` in file-name order, concatenated.
pub fn read_dir(dir: &Path) -> anyhow::Result<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("policy_dir `{}`: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("`{}`: {e}", f.display()))?;
        out.push_str(&format!(
            "// from {}\n",
            f.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        out.push_str(&text);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
