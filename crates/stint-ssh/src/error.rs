//! The one error type of this crate.

/// Why a CA key could not be loaded or a certificate could not be issued.
///
/// Messages name what was wrong with the input, never the input's key material: they are safe to log and
/// to return to the client that sent the public key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The operating system's random number generator failed while generating a CA key.
    #[error("failed to generate an ed25519 CA key")]
    KeyGeneration,

    /// The CA key text is not an OpenSSH private key.
    #[error("the CA key is not a valid OpenSSH private key")]
    InvalidCaKey,

    /// The CA key is protected by a passphrase; stint expects it unencrypted (it seals it itself).
    #[error("the CA key is encrypted with a passphrase; provide an unencrypted OpenSSH private key")]
    EncryptedCaKey,

    /// The CA key is not Ed25519.
    #[error("the CA key must be an ed25519 key, not `{algorithm}`")]
    UnsupportedCaAlgorithm {
        /// The algorithm of the key that was given, e.g. `ssh-rsa`.
        algorithm: String,
    },

    /// Encoding a key or certificate failed (should not happen for well-formed values).
    #[error("failed to encode the {what}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
    },

    /// Signing the certificate failed.
    #[error("failed to sign the certificate")]
    Signing,

    /// The client public key is not one OpenSSH public key line.
    #[error("the public key is not a valid OpenSSH public key line")]
    InvalidPublicKey,

    /// The client sent a certificate where a plain public key is expected.
    #[error("a certificate was given where a plain public key is expected")]
    CertificateNotAllowed,

    /// The client key uses an algorithm stint does not certify (DSA, or one unknown to OpenSSH).
    #[error("`{algorithm}` keys are not accepted; use ed25519, ecdsa or rsa (2048 bits or more)")]
    UnsupportedKeyAlgorithm {
        /// The algorithm of the rejected key, e.g. `ssh-dss`.
        algorithm: String,
    },

    /// The client RSA key is too short (or longer than OpenSSH accepts).
    #[error("rsa keys must have between 2048 and 16384 bits, this one has {bits}")]
    RsaKeySize {
        /// The modulus length of the rejected key.
        bits: usize,
    },

    /// Serial 0 cannot be revoked by serial in a KRL, so stint never issues it.
    #[error("the certificate serial must not be 0 (a KRL cannot revoke serial 0)")]
    ZeroSerial,

    /// The key id is empty or contains control characters.
    #[error("the certificate key id must be non-empty printable text")]
    InvalidKeyId,

    /// No principals were given: OpenSSH would treat the certificate as valid for every user.
    #[error("a certificate needs at least one principal")]
    NoPrincipals,

    /// A principal is empty or contains control characters.
    #[error("invalid principal `{principal}`: must be non-empty printable text")]
    InvalidPrincipal {
        /// The rejected principal, with control characters escaped.
        principal: String,
    },

    /// The validity window is empty or outside what OpenSSH certificates can express.
    #[error(
        "invalid validity window {valid_after}..{valid_before}: valid_before must be after valid_after, \
         and both at most 2^63-1"
    )]
    InvalidValidity {
        /// Start of the window, unix seconds.
        valid_after: u64,
        /// End of the window, unix seconds.
        valid_before: u64,
    },

    /// The forced command is empty or contains control characters other than tab.
    #[error("the forced command must be non-empty and contain no control characters")]
    InvalidForceCommand,

    /// The source-address option is not a comma-separated list of CIDR networks.
    #[error("invalid source address list `{list}`: {reason}")]
    InvalidSourceAddress {
        /// The rejected list, with control characters escaped.
        list: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An extension name is neither a standard OpenSSH extension nor a `name@domain` one.
    #[error("unknown certificate extension `{name}`")]
    UnknownExtension {
        /// The rejected extension name, with control characters escaped.
        name: String,
    },

    /// A KRL could not be read back (see [`crate::krl_revokes`]).
    #[error("the KRL cannot be read: {reason}")]
    UnreadableKrl {
        /// What is wrong with it.
        reason: &'static str,
    },
}
