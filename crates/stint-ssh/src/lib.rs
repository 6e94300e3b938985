//! OpenSSH user certificates and key revocation lists for stint.
//!
//! - [`UserCa`] holds the Ed25519 user CA and signs one short-lived certificate per session from a
//!   [`CertRequest`]; hosts trust it with `TrustedUserCAKeys`.
//! - [`encode_krl`] writes the key revocation list hosts read through `RevokedKeys`, revoking certificates
//!   by serial; [`krl_revokes`] reads one back.
//! - [`fingerprint`] names a client key in audit records.
//!
//! No I/O and no clock: callers pass times in and write files out.

mod ca;
mod error;
mod krl;

pub use ca::{CertRequest, UserCa, fingerprint};
pub use error::SshError;
pub use krl::{encode_krl, krl_revokes};
