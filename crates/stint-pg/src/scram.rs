//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) as PostgreSQL stores them, and random passwords.

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2, rand};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::SecretString;

/// The PBKDF2 iteration count used for new verifiers (PostgreSQL's default `scram_iterations`).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The salt length used for new verifiers, as PostgreSQL does.
pub(crate) const SALT_LEN: usize = 16;

/// Computes the SCRAM-SHA-256 verifier PostgreSQL stores in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
///
/// Sent as the `PASSWORD` of `CREATE ROLE` or `ALTER ROLE`, it sets the password without the
/// plaintext reaching the server.
///
/// The password's bytes are used as they are. PostgreSQL normalizes a password with SASLprep first,
/// which leaves every ASCII string unchanged; a non-ASCII password may normalize differently, which
/// is why [`PgAdmin`](crate::PgAdmin) accepts only ASCII passwords. An `iterations` of 0 is taken as 1
/// (and written as 1).
pub fn scram_sha256_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    let mut salted = [0u8; digest::SHA256_OUTPUT_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref()),
    )
}

/// A new random password: 32 bytes from the system's CSPRNG, base64url without padding (43 characters
/// of `A-Z a-z 0-9 - _`).
pub fn generate_password() -> SecretString {
    let bytes = random_bytes::<32>();
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// `N` bytes from aws-lc's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // INVARIANT: aws-lc's RAND_bytes does not fail; it aborts the process if the operating system's
    // entropy source fails, so this error is unreachable.
    #[expect(clippy::expect_used, reason = "aws-lc's RAND_bytes cannot return failure")]
    rand::fill(&mut bytes).expect("the system CSPRNG failed");
    bytes
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    /// Computed by PostgreSQL 15: `SET password_encryption = 'scram-sha-256'; CREATE ROLE r PASSWORD
    /// 'pencil'; SELECT rolpassword FROM pg_authid WHERE rolname = 'r'`.
    const PG15_PENCIL: &str = "SCRAM-SHA-256$4096:JSzCGug+gznGBh8GLs0E0Q==$\
        9uoLdOCG02/NNgElxTdBDora1hn1DrjQ+0JM+Thq1to=:sSfAC4WfxF0y38TdzGwxVsHNrUYmhx0yva9VWDzsyUs=";

    #[test]
    fn verifier_matches_one_postgresql_computed() {
        let salt = STANDARD.decode("JSzCGug+gznGBh8GLs0E0Q==").unwrap();
        assert_eq!(scram_sha256_verifier("pencil", &salt, 4096), PG15_PENCIL);
    }

    #[test]
    fn verifier_differs_with_salt_password_and_iterations() {
        let a = scram_sha256_verifier("pencil", &[1; 16], 4096);
        assert_ne!(a, scram_sha256_verifier("pencil", &[2; 16], 4096));
        assert_ne!(a, scram_sha256_verifier("pencil2", &[1; 16], 4096));
        assert_ne!(a, scram_sha256_verifier("pencil", &[1; 16], 4097));
        assert!(!a.contains("pencil"));
    }

    #[test]
    fn verifier_takes_zero_iterations_as_one_and_survives_an_empty_password() {
        assert_eq!(
            scram_sha256_verifier("x", &[0; 16], 0),
            scram_sha256_verifier("x", &[0; 16], 1)
        );
        assert!(scram_sha256_verifier("", &[0; 16], 1).starts_with("SCRAM-SHA-256$1:"));
    }

    #[test]
    fn generated_passwords_are_43_base64url_characters_and_differ() {
        let a = generate_password();
        let b = generate_password();
        for p in [&a, &b] {
            let p = p.expose_secret();
            assert_eq!(p.len(), 43);
            assert!(
                p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "{p}"
            );
            assert_eq!(URL_SAFE_NO_PAD.decode(p).unwrap().len(), 32);
        }
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
