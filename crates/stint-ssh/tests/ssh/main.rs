//! stint-ssh against the real OpenSSH tools: `ssh-keygen -L` and `-Q` as oracles for certificates and
//! KRLs, and a real `sshd` (when `STINT_TEST_SSHD` names one) for logins.

#![expect(clippy::unwrap_used, reason = "tests")]

mod certs;
mod krl;
mod sshd;
mod support;
