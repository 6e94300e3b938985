//! stint's pure core: the session state machine, its stop conditions and the audit chain.
//!
//! Nothing in this crate does I/O, spawns tasks or reads the system clock: time comes in as an argument
//! (or through [`clock::Clock`]), and every transition returns the effects the server must carry out.
//! That makes every rule unit-testable and every race reproducible.

pub mod audit;
pub mod clock;
pub mod id;
pub mod session;

pub use audit::{AuditRecord, ChainVerification, PendingAudit};
pub use clock::{Clock, ManualClock, SystemClock};
pub use id::{CredentialId, PrincipalId, SessionId};
pub use session::{
    Actor, Approval, Binding, BindingKind, Credential, CredentialKind, Effect, EndReason, Event, NewSession,
    Revocation, Session, State, TransitionError,
};
