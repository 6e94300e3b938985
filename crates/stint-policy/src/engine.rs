//! The validated policy set in force and the decisions made with it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, Request, Response, RestrictedExpression, Schema, ValidationMode,
    ValidationWarning, Validator,
};
use sha2::{Digest, Sha256};

use crate::analysis::PolicyMeta;
use crate::error::{PolicyError, tidy};
use crate::generate::{RESERVED_PREFIX, generated_source};
use crate::lint::{self, Finding, LintConfig};
use crate::{Action, Decision, PrincipalInfo, RequestContext, SCHEMA, TargetInfo};

/// An immutable, validated snapshot of the policies in force: the user's policies plus those generated
/// from the targets' fields. Cheap to clone (one `Arc`); `Send + Sync`. Build a new one whenever the user
/// source or the targets change.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
}

struct Inner {
    schema: Schema,
    types: Types,
    /// User and generated policies, under their final ids.
    policies: PolicySet,
    /// `@approvals` of every policy that has one (user and generated).
    approvals: HashMap<String, u32>,
    /// The user policies in source order.
    user: Vec<PolicyMeta>,
    /// The validator's warnings about user policies.
    warnings: Vec<Warning>,
    hash: String,
    generated: String,
}

/// A validator warning about a user policy.
#[derive(Debug, Clone)]
pub(crate) struct Warning {
    pub policy: String,
    pub message: String,
    /// Cedar found the policy can never apply (`ImpossiblePolicy`, `InvalidActionApplication`).
    pub never_applies: bool,
}

struct Types {
    principal: EntityTypeName,
    group: EntityTypeName,
    target: EntityTypeName,
    action: EntityTypeName,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("hash", &self.inner.hash)
            .field("user_policies", &self.inner.user.len())
            .field("policies", &self.inner.policies.num_of_policies())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Parses and validates `user_source` (may be empty) against [`SCHEMA`] and adds the policies
    /// generated from the targets' simple fields; an invalid user source is refused with every error's
    /// line and column.
    ///
    /// User policies are named by their `@id("…")` annotation, else `policy0`, `policy1`, … in source
    /// order. Refused besides Cedar's parse and (strict) validation errors: duplicate ids, empty ids, ids
    /// starting with `target:` (reserved for generated policies), an `@approvals` that is not a
    /// non-negative integer or sits on a `forbid`, and templates (`?principal`, `?resource`).
    pub fn new(user_source: &str, targets: &[TargetInfo]) -> Result<PolicyEngine, Vec<PolicyError>> {
        let schema = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|e| {
                vec![PolicyError::unplaced(format!(
                    "the built-in schema is invalid: {e}"
                ))]
            })?
            .0;
        let types = Types::new()?;
        let validator = Validator::new(schema.clone());
        let user = load(user_source, &validator, Origin::User)?;
        let generated = generated_source(targets);
        let gen_set = load(&generated, &validator, Origin::Generated)?;
        let mut approvals = user.approvals;
        approvals.extend(gen_set.approvals);
        let policies =
            PolicySet::from_policies(user.policies.into_iter().chain(gen_set.policies)).map_err(|e| {
                vec![PolicyError::unplaced(format!(
                    "cannot combine user and generated policies: {e}"
                ))]
            })?;
        Ok(PolicyEngine {
            inner: Arc::new(Inner {
                schema,
                types,
                policies,
                approvals,
                user: user.metas,
                warnings: user.warnings,
                hash: hex::encode(Sha256::digest(user_source.as_bytes())),
                generated,
            }),
        })
    }

    /// Hex SHA-256 of the user source exactly as given.
    pub fn hash(&self) -> String {
        self.inner.hash.clone()
    }

    /// How many policies the user source holds.
    pub fn user_policies(&self) -> usize {
        self.inner.user.len()
    }

    /// The ids of the user policies, in source order.
    pub fn user_policy_ids(&self) -> Vec<String> {
        self.inner.user.iter().map(|m| m.id.clone()).collect()
    }

    /// The Cedar text generated from the targets' fields.
    pub fn generated_source(&self) -> String {
        self.inner.generated.clone()
    }

    /// Cedar authorization of `principal` doing `action` on `target` in `ctx`: default deny, a matching
    /// `forbid` beats every `permit`.
    ///
    /// For an allowed [`Action::Request`], `approvals_required` is the largest `@approvals("N")` among the
    /// permits that matched (0 for a permit without one), and at least the target's `approvals_required`
    /// (the floor); for every other action it is 0. Break-glass requests are asked as
    /// [`Action::BreakGlass`].
    ///
    /// Fails closed beyond Cedar: a `forbid` whose condition errors at evaluation (Cedar would skip it)
    /// denies, with its id in `reasons`; a principal or target that cannot be expressed in the vocabulary
    /// is denied with no reasons.
    pub fn authorize(
        &self,
        principal: &PrincipalInfo,
        action: Action,
        target: &TargetInfo,
        ctx: &RequestContext,
    ) -> Decision {
        let Some(response) = self.evaluate(principal, action, target, ctx) else {
            return Decision {
                allow: false,
                approvals_required: 0,
                reasons: Vec::new(),
            };
        };
        let mut failed_forbids: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => e.policy_id(),
            })
            .filter(|id| {
                self.inner
                    .policies
                    .policy(id)
                    .is_some_and(|p| p.effect() == Effect::Forbid)
            })
            .map(|id| id_str(id).to_owned())
            .collect();
        if !failed_forbids.is_empty() {
            failed_forbids.sort();
            failed_forbids.dedup();
            return Decision {
                allow: false,
                approvals_required: 0,
                reasons: failed_forbids,
            };
        }
        let allow = response.decision() == cedar_policy::Decision::Allow;
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id_str(id).to_owned())
            .collect();
        reasons.sort();
        let approvals_required = if allow && action == Action::Request {
            reasons
                .iter()
                .filter_map(|id| self.inner.approvals.get(id).copied())
                .fold(target.approvals_required, u32::max)
        } else {
            0
        };
        Decision {
            allow,
            approvals_required,
            reasons,
        }
    }

    /// Names of the `principals` allowed to approve requests on `target` in `ctx` ([`Action::Approve`]),
    /// sorted, without repeats.
    pub fn eligible_approvers(
        &self,
        principals: &[PrincipalInfo],
        target: &TargetInfo,
        ctx: &RequestContext,
    ) -> Vec<String> {
        let names: BTreeSet<&str> = principals
            .iter()
            .filter(|p| self.authorize(p, Action::Approve, target, ctx).allow)
            .map(|p| p.name.as_str())
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// "Session-bound in name only" findings for these policies and `targets`, most severe first (see
    /// `docs/policies.md` for every class and its limits). Empty for a clean configuration.
    pub fn lint(&self, targets: &[TargetInfo], cfg: &LintConfig) -> Vec<Finding> {
        lint::lint(&self.inner.user, &self.inner.warnings, targets, cfg)
    }

    fn evaluate(
        &self,
        principal: &PrincipalInfo,
        action: Action,
        target: &TargetInfo,
        ctx: &RequestContext,
    ) -> Option<Response> {
        let i = &*self.inner;
        let p_uid = uid(&i.types.principal, &principal.name);
        let t_uid = uid(&i.types.target, &target.name);
        let groups: BTreeSet<&str> = principal.groups.iter().map(String::as_str).collect();
        let group_uids: Vec<EntityUid> = groups.iter().map(|g| uid(&i.types.group, g)).collect();
        let p_entity = Entity::new(
            p_uid.clone(),
            HashMap::from([
                ("name".to_owned(), string(&principal.name)),
                ("kind".to_owned(), string(&principal.kind)),
            ]),
            group_uids.iter().cloned().collect(),
        )
        .ok()?;
        let t_entity = Entity::new(
            t_uid.clone(),
            HashMap::from([
                ("name".to_owned(), string(&target.name)),
                ("kind".to_owned(), string(&target.kind)),
                (
                    "environment".to_owned(),
                    string(target.environment.as_deref().unwrap_or_default()),
                ),
                (
                    "tags".to_owned(),
                    RestrictedExpression::new_set(target.tags.iter().map(|t| string(t))),
                ),
            ]),
            HashSet::new(),
        )
        .ok()?;
        let group_entities = group_uids
            .into_iter()
            .map(|u| Entity::new_no_attrs(u, HashSet::new()));
        let entities = Entities::from_entities(
            [p_entity, t_entity].into_iter().chain(group_entities),
            Some(&i.schema),
        )
        .ok()?;
        let long = |n: i64| RestrictedExpression::new_long(n);
        let record = |pairs: Vec<(&str, RestrictedExpression)>| {
            RestrictedExpression::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
        };
        let context = Context::from_pairs([
            (
                "ttl_s".to_owned(),
                long(i64::try_from(ctx.ttl_s).unwrap_or(i64::MAX)),
            ),
            ("reason".to_owned(), string(&ctx.reason)),
            (
                "binding".to_owned(),
                record(vec![
                    ("kind", string(&ctx.binding_kind)),
                    ("ref", string(&ctx.binding_ref)),
                ])
                .ok()?,
            ),
            (
                "break_glass".to_owned(),
                RestrictedExpression::new_bool(ctx.break_glass),
            ),
            (
                "time".to_owned(),
                record(vec![
                    ("hour", long(ctx.time.hour.into())),
                    ("minute", long(ctx.time.minute.into())),
                    ("weekday", string(ctx.time.weekday)),
                ])
                .ok()?,
            ),
        ])
        .ok()?;
        let a_uid = uid(&i.types.action, action.as_str());
        let request = Request::new(p_uid, a_uid, t_uid, context, Some(&i.schema)).ok()?;
        Some(Authorizer::new().is_authorized(&request, &i.policies, &entities))
    }
}

impl Types {
    fn new() -> Result<Self, Vec<PolicyError>> {
        let ty = |name: &str| {
            EntityTypeName::from_str(name)
                .map_err(|e| vec![PolicyError::unplaced(format!("entity type `{name}`: {e}"))])
        };
        Ok(Self {
            principal: ty("Principal")?,
            group: ty("Group")?,
            target: ty("Target")?,
            action: ty("Action")?,
        })
    }
}

/// The id as written. (`PolicyId`'s `Display` escapes it like `str::escape_debug`.)
fn id_str(id: &PolicyId) -> &str {
    id.as_ref()
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

/// Where a policy text comes from: the user (errors placed in their text) or the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    User,
    Generated,
}

/// A parsed, renamed and validated policy text.
struct Loaded {
    policies: Vec<Policy>,
    metas: Vec<PolicyMeta>,
    approvals: HashMap<String, u32>,
    warnings: Vec<Warning>,
}

fn load(src: &str, validator: &Validator, origin: Origin) -> Result<Loaded, Vec<PolicyError>> {
    let placed = |errors: Vec<PolicyError>| match origin {
        Origin::User => tidy(errors),
        // The generated text is not the user's: keep its position inside the message.
        Origin::Generated => tidy(errors)
            .into_iter()
            .map(|e| PolicyError::unplaced(format!("generated policies, {e}")))
            .collect(),
    };
    let set = PolicySet::from_str(src).map_err(|errs| {
        placed(
            errs.iter()
                .map(|e| PolicyError::from_diagnostic(src, e))
                .collect(),
        )
    })?;
    let spans = Spans::new(src, &set);
    let mut errors = Vec::new();
    for t in set.templates() {
        errors.push(PolicyError::at(
            src,
            spans.start(t.id()),
            "templates (`?principal`, `?resource`) are not supported: write a policy naming the entities",
        ));
    }

    // Rename by `@id`; read `@approvals`.
    let mut ordered: Vec<&Policy> = set.policies().collect();
    ordered.sort_by_key(|p| default_index(p.id()));
    let mut ids = HashSet::new();
    let mut renamed = Vec::new();
    let mut metas = Vec::new();
    let mut approvals = HashMap::new();
    for p in ordered {
        let start = spans.start(p.id());
        let at = |key: &str| spans.annotation(p.id(), key).unwrap_or(start);
        let id = match p.annotation("id") {
            None => id_str(p.id()).to_owned(),
            Some(id) => {
                let problem = if id.is_empty() {
                    Some("`@id` must not be empty".to_owned())
                } else if origin == Origin::User && id.starts_with(RESERVED_PREFIX) {
                    Some(format!(
                        "`@id(\"{id}\")`: ids starting with `{RESERVED_PREFIX}` are reserved for generated \
                         policies"
                    ))
                } else {
                    None
                };
                match problem {
                    Some(m) => {
                        errors.push(PolicyError::at(src, at("id"), m));
                        // Keep validating under a name no text can give.
                        format!("#{}", default_index(p.id()))
                    }
                    None => id.to_owned(),
                }
            }
        };
        let id = if ids.insert(id.clone()) {
            id
        } else {
            errors.push(PolicyError::at(
                src,
                at("id"),
                format!("duplicate policy id `{id}`"),
            ));
            format!("#{}", default_index(p.id()))
        };
        let n = match p.annotation("approvals") {
            None => None,
            Some(_) if p.effect() == Effect::Forbid => {
                errors.push(PolicyError::at(
                    src,
                    at("approvals"),
                    "`@approvals` only applies to `permit` policies",
                ));
                None
            }
            Some(v) => match v.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.push(PolicyError::at(
                        src,
                        at("approvals"),
                        format!(
                            "`@approvals(\"{v}\")` must be a whole number of approvals, e.g. \
                             `@approvals(\"2\")`"
                        ),
                    ));
                    None
                }
            },
        };
        if let Some(n) = n {
            approvals.insert(id.clone(), n);
        }
        let p = p.new_id(PolicyId::new(&id));
        metas.push(PolicyMeta::new(id, &p, n));
        renamed.push(p);
    }

    let renamed_set = PolicySet::from_policies(renamed.iter().cloned()).map_err(|e| {
        placed(vec![PolicyError::unplaced(format!(
            "cannot build the policy set: {e}"
        ))])
    })?;
    let result = validator.validate(&renamed_set, ValidationMode::Strict);
    errors.extend(
        result
            .validation_errors()
            .map(|e| PolicyError::from_diagnostic(src, e)),
    );
    if !errors.is_empty() {
        return Err(placed(errors));
    }
    let warnings = result
        .validation_warnings()
        .map(|w| Warning {
            policy: id_str(w.policy_id()).to_owned(),
            message: w.to_string(),
            never_applies: matches!(
                w,
                ValidationWarning::ImpossiblePolicy(_) | ValidationWarning::InvalidActionApplication(_)
            ),
        })
        .collect();
    Ok(Loaded {
        policies: renamed,
        metas,
        approvals,
        warnings,
    })
}

/// `policy7` → 7 (Cedar's default ids number policies and templates in source order).
fn default_index(id: &PolicyId) -> usize {
    id_str(id)
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Byte ranges of the policies of a parsed text, keyed by their default ids, for the errors stint itself
/// reports (ids, `@approvals`, templates): cedar's public API has no source position for a policy, but
/// it keeps each policy's exact text, and they appear in the source in id order, so a forward search
/// finds each one. (A comment holding a verbatim copy of the next policy would be found first; the
/// error then points at the comment.)
struct Spans<'a> {
    src: &'a str,
    ranges: HashMap<String, (usize, usize)>,
}

impl<'a> Spans<'a> {
    fn new(src: &'a str, set: &PolicySet) -> Self {
        let mut texts: Vec<(usize, String, String)> = set
            .policies()
            .filter_map(|p| {
                p.to_cedar()
                    .map(|t| (default_index(p.id()), id_str(p.id()).to_owned(), t))
            })
            .chain(
                set.templates()
                    .map(|t| (default_index(t.id()), id_str(t.id()).to_owned(), t.to_cedar())),
            )
            .collect();
        texts.sort_by_key(|(n, _, _)| *n);
        let mut ranges = HashMap::new();
        let mut from = 0;
        for (_, id, text) in texts {
            if let Some(found) = src.get(from..).and_then(|rest| rest.find(&text)) {
                let start = from + found;
                from = start + text.len();
                ranges.insert(id, (start, from));
            }
        }
        Self { src, ranges }
    }

    /// Where the policy starts (0 when unknown).
    fn start(&self, id: &PolicyId) -> usize {
        self.ranges.get(id_str(id)).map_or(0, |r| r.0)
    }

    /// Where its `@key` annotation starts.
    fn annotation(&self, id: &PolicyId, key: &str) -> Option<usize> {
        let &(start, end) = self.ranges.get(id_str(id))?;
        let text = self.src.get(start..end)?;
        let mut from = 0;
        while let Some(i) = text.get(from..)?.find('@') {
            let at = from + i;
            let rest = text.get(at + 1..)?.trim_start();
            if rest
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('('))
            {
                return Some(start + at);
            }
            from = at + 1;
        }
        None
    }
}
