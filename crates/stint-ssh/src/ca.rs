//! The user CA: an Ed25519 key that signs short-lived OpenSSH user certificates.

use std::fmt;
use std::net::IpAddr;

use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::KeyData;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::SshError;

/// Comment given to CA keys made by [`UserCa::generate`]; it ends up in the host's `TrustedUserCAKeys` line.
const GENERATED_CA_COMMENT: &str = "stint-user-ca";

/// Longest public key line accepted (a 16384-bit RSA key is about 2.8 KB).
const MAX_PUBLIC_KEY_LINE: usize = 16 * 1024;

/// Smallest RSA modulus stint certifies.
const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus OpenSSH accepts (`SSHBUF_MAX_BIGNUM`).
const MAX_RSA_BITS: usize = 16384;

/// Longest single `source-address` entry OpenSSH accepts: `INET6_ADDRSTRLEN + 3`.
const MAX_SOURCE_ADDRESS_ENTRY: usize = 49;

/// Longest input echoed back inside an error message.
const MAX_ECHO: usize = 100;

/// The extensions OpenSSH defines for user certificates (PROTOCOL.certkeys).
const STANDARD_EXTENSIONS: &[&str] = &[
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// An OpenSSH user certificate authority backed by an Ed25519 key.
///
/// Hosts trust it with `TrustedUserCAKeys`; it signs one short-lived certificate per session. Its `Debug`
/// output shows only the public key's fingerprint.
pub struct UserCa {
    // INVARIANT: an unencrypted Ed25519 key; both constructors check it.
    key: PrivateKey,
    public_blob: Vec<u8>,
    public_line: String,
}

/// What to put in a user certificate; see [`UserCa::sign_user_cert`].
#[derive(Debug, Clone, Copy)]
pub struct CertRequest<'a> {
    /// The client's OpenSSH public key line, e.g. `ssh-ed25519 AAAA... alice@laptop`.
    ///
    /// Certificates, DSA keys and RSA keys under 2048 bits are refused.
    pub public_key: &'a str,
    /// Certificate serial, unique per CA; revocation lists name it. Must not be 0.
    pub serial: u64,
    /// Free-form key id (stint puts the session id here); sshd logs it on every login.
    pub key_id: &'a str,
    /// The login names the certificate is valid for; must not be empty. Duplicates are dropped.
    pub principals: &'a [String],
    /// Start of validity, unix seconds (inclusive).
    pub valid_after: u64,
    /// End of validity, unix seconds (exclusive); must be greater than `valid_after`.
    pub valid_before: u64,
    /// The `force-command` critical option: the only command sshd will run.
    pub force_command: Option<&'a str>,
    /// The `source-address` critical option: comma-separated CIDR networks the client must connect
    /// from, e.g. `10.0.0.0/8,2001:db8::/32,192.0.2.7`. Host bits must be zero, as OpenSSH requires.
    pub source_address: Option<&'a str>,
    /// Extensions to grant, e.g. `["permit-pty"]`; empty grants none. Standard OpenSSH names or
    /// `name@domain` ones. Duplicates are dropped.
    pub extensions: &'a [&'a str],
}

impl UserCa {
    /// Generates a new Ed25519 CA key from the operating system's random number generator.
    pub fn generate() -> Result<UserCa, SshError> {
        let mut key =
            PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(|_| SshError::KeyGeneration)?;
        key.set_comment(GENERATED_CA_COMMENT);
        UserCa::from_key(key)
    }

    /// Loads a CA from an unencrypted OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    ///
    /// Only Ed25519 keys are accepted; passphrase-protected keys are refused with
    /// [`SshError::EncryptedCaKey`].
    pub fn from_openssh(private_key_pem: &str) -> Result<UserCa, SshError> {
        let key = PrivateKey::from_openssh(private_key_pem.trim()).map_err(|_| SshError::InvalidCaKey)?;
        if key.is_encrypted() {
            return Err(SshError::EncryptedCaKey);
        }
        UserCa::from_key(key)
    }

    fn from_key(key: PrivateKey) -> Result<UserCa, SshError> {
        if key.algorithm() != Algorithm::Ed25519 || key.key_data().ed25519().is_none() {
            return Err(SshError::UnsupportedCaAlgorithm {
                algorithm: key.algorithm().as_str().to_owned(),
            });
        }
        let public = key.public_key();
        let public_blob = public.to_bytes().map_err(|_| SshError::Encoding {
            what: "CA public key",
        })?;
        let public_line = public.to_openssh().map_err(|_| SshError::Encoding {
            what: "CA public key",
        })?;
        Ok(UserCa {
            key,
            public_blob,
            public_line,
        })
    }

    /// The private key in OpenSSH format, unencrypted, for the caller to seal at rest.
    pub fn to_openssh(&self) -> Result<Zeroizing<String>, SshError> {
        self.key
            .to_openssh(LineEnding::LF)
            .map_err(|_| SshError::Encoding {
                what: "CA private key",
            })
    }

    /// The public key line (`ssh-ed25519 AAAA... comment`) for a host's `TrustedUserCAKeys` file.
    pub fn public_key_openssh(&self) -> String {
        self.public_line.clone()
    }

    /// The public key in SSH wire format: what a KRL's `ca_key` field holds (see [`crate::encode_krl`]).
    pub fn public_key_blob(&self) -> Vec<u8> {
        self.public_blob.clone()
    }

    /// The SHA-256 fingerprint of the CA public key, `SHA256:...`.
    pub fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    /// Signs a user certificate and returns it as one OpenSSH line,
    /// e.g. `ssh-ed25519-cert-v01@openssh.com AAAA...` (the type follows the client's key type).
    ///
    /// Every field of `req` is checked first; see [`CertRequest`] for the rules.
    pub fn sign_user_cert(&self, req: &CertRequest<'_>) -> Result<String, SshError> {
        let subject = parse_plain_public_key(req.public_key)?;
        check_subject_key(&subject)?;
        if req.serial == 0 {
            return Err(SshError::ZeroSerial);
        }
        if !is_printable(req.key_id) {
            return Err(SshError::InvalidKeyId);
        }
        let principals = checked_principals(req.principals)?;
        let invalid_validity = || SshError::InvalidValidity {
            valid_after: req.valid_after,
            valid_before: req.valid_before,
        };
        if req.valid_before <= req.valid_after {
            return Err(invalid_validity());
        }
        if let Some(command) = req.force_command
            && (command.trim().is_empty() || command.chars().any(|c| c.is_control() && c != '\t'))
        {
            return Err(SshError::InvalidForceCommand);
        }
        if let Some(list) = req.source_address {
            check_source_address_list(list)?;
        }
        let extensions = checked_extensions(req.extensions)?;

        let mut builder =
            Builder::new_with_random_nonce(&mut OsRng, subject, req.valid_after, req.valid_before)
                .map_err(|_| invalid_validity())?;
        // The builder only errors when a single-valued field is set twice; each is set once here.
        let sign_error = |_| SshError::Signing;
        builder.serial(req.serial).map_err(sign_error)?;
        builder.cert_type(CertType::User).map_err(sign_error)?;
        builder.key_id(req.key_id).map_err(sign_error)?;
        for principal in principals {
            builder.valid_principal(principal).map_err(sign_error)?;
        }
        if let Some(command) = req.force_command {
            builder
                .critical_option("force-command", command)
                .map_err(sign_error)?;
        }
        if let Some(list) = req.source_address {
            builder
                .critical_option("source-address", list)
                .map_err(sign_error)?;
        }
        for extension in extensions {
            builder.extension(extension, "").map_err(sign_error)?;
        }
        let cert = builder.sign(&self.key).map_err(sign_error)?;
        cert.to_openssh()
            .map_err(|_| SshError::Encoding { what: "certificate" })
    }
}

impl fmt::Debug for UserCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// The SHA-256 fingerprint (`SHA256:...`, as `ssh-keygen -l` prints it) of a plain public key line.
///
/// Certificates are refused, like in [`CertRequest::public_key`].
pub fn fingerprint(public_key_line: &str) -> Result<String, SshError> {
    let key = parse_plain_public_key(public_key_line)?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

/// Parses one OpenSSH public key line that is not a certificate.
fn parse_plain_public_key(line: &str) -> Result<KeyData, SshError> {
    let line = line.trim();
    if line.is_empty() || line.len() > MAX_PUBLIC_KEY_LINE || line.contains(['\n', '\r', '\0']) {
        return Err(SshError::InvalidPublicKey);
    }
    let key_type = line.split_ascii_whitespace().next().unwrap_or_default();
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(SshError::CertificateNotAllowed);
    }
    let key = PublicKey::from_openssh(line).map_err(|_| SshError::InvalidPublicKey)?;
    Ok(key.key_data().clone())
}

/// Refuses key types stint does not certify.
fn check_subject_key(key: &KeyData) -> Result<(), SshError> {
    match key {
        KeyData::Ed25519(_) | KeyData::SkEd25519(_) | KeyData::Ecdsa(_) | KeyData::SkEcdsaSha2NistP256(_) => {
            Ok(())
        }
        KeyData::Rsa(rsa) => {
            let bits = rsa.n.as_positive_bytes().map(bit_length).unwrap_or(0);
            if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                Ok(())
            } else {
                Err(SshError::RsaKeySize { bits })
            }
        }
        // DSA, opaque keys of unknown algorithms, and whatever a later ssh-key adds.
        other => Err(SshError::UnsupportedKeyAlgorithm {
            algorithm: echo(other.algorithm().as_str()),
        }),
    }
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    let significant = bytes
        .iter()
        .position(|&b| b != 0)
        .map_or(&[][..], |start| &bytes[start..]);
    match significant.first() {
        None => 0,
        Some(&top) => (significant.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// Non-empty and free of control characters.
fn is_printable(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(char::is_control)
}

fn checked_principals(principals: &[String]) -> Result<Vec<&str>, SshError> {
    if principals.is_empty() {
        return Err(SshError::NoPrincipals);
    }
    let mut out: Vec<&str> = Vec::with_capacity(principals.len());
    for principal in principals {
        if !is_printable(principal) || principal.trim() != principal {
            return Err(SshError::InvalidPrincipal {
                principal: echo(principal),
            });
        }
        if !out.contains(&principal.as_str()) {
            out.push(principal);
        }
    }
    Ok(out)
}

fn checked_extensions<'a>(extensions: &[&'a str]) -> Result<Vec<&'a str>, SshError> {
    let mut out: Vec<&str> = Vec::with_capacity(extensions.len());
    for &name in extensions {
        let custom = name.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != ',')
        });
        if !STANDARD_EXTENSIONS.contains(&name) && !custom {
            return Err(SshError::UnknownExtension { name: echo(name) });
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Checks a `source-address` list the way OpenSSH's `addr_match_cidr_list` does, only stricter: every
/// entry must be an IPv4 or IPv6 address with an optional `/bits` prefix length and zero host bits.
///
/// A list OpenSSH would reject makes sshd refuse the certificate at login, so it is caught here instead.
pub(crate) fn check_source_address_list(list: &str) -> Result<(), SshError> {
    let invalid = |reason: String| SshError::InvalidSourceAddress {
        list: echo(list),
        reason,
    };
    if list.is_empty() {
        return Err(invalid("the list is empty".to_owned()));
    }
    for entry in list.split(',') {
        check_source_address_entry(entry)
            .map_err(|reason| invalid(format!("entry `{}` {reason}", echo(entry))))?;
    }
    Ok(())
}

fn check_source_address_entry(entry: &str) -> Result<(), &'static str> {
    if entry.is_empty() {
        return Err("is empty");
    }
    if entry.len() > MAX_SOURCE_ADDRESS_ENTRY {
        return Err("is too long");
    }
    if !entry
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'))
    {
        return Err("may hold only hex digits, `.`, `:` and `/`");
    }
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let address: IpAddr = address.parse().map_err(|_| "is not an IPv4 or IPv6 address")?;
    let max_prefix = if address.is_ipv4() { 32 } else { 128 };
    let Some(prefix) = prefix else {
        return Ok(());
    };
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err("has an invalid prefix length");
    }
    let prefix: u32 = prefix.parse().map_err(|_| "has an invalid prefix length")?;
    if prefix > max_prefix {
        return Err("has a prefix length longer than the address");
    }
    let host_bits_set = match address {
        IpAddr::V4(v4) => u32::from(v4) & host_mask_v4(prefix) != 0,
        IpAddr::V6(v6) => u128::from(v6) & host_mask_v6(prefix) != 0,
    };
    if host_bits_set {
        return Err("has host bits set after the prefix (OpenSSH refuses it)");
    }
    Ok(())
}

fn host_mask_v4(prefix: u32) -> u32 {
    u32::MAX.checked_shr(prefix).unwrap_or(0)
}

fn host_mask_v6(prefix: u32) -> u128 {
    u128::MAX.checked_shr(prefix).unwrap_or(0)
}

/// User input for an error message: control characters escaped, cut to a readable length.
fn echo(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_ECHO).flat_map(char::escape_debug).collect();
    if text.chars().count() > MAX_ECHO {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_counts_significant_bits() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0xff; 256]), 2048);
    }

    #[test]
    fn source_address_accepts_what_openssh_accepts() {
        for ok in [
            "127.0.0.1",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "::1",
            "2001:db8::/32",
            "::/0",
            "10.1.2.3/32,::1/128",
        ] {
            assert!(check_source_address_list(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn source_address_refuses_what_openssh_refuses() {
        for bad in [
            "",
            ",",
            "10.0.0.1,",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-8",
            "host.example.com",
            "10.0.0.*",
            "!10.0.0.0/8",
            "10.0.0.1 ",
            " 10.0.0.1",
            "010.0.0.1",
            "fe80::1%eth0",
            "1.2.3.4/0032",
        ] {
            assert!(check_source_address_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn echo_escapes_and_truncates() {
        assert_eq!(echo("a\nb"), "a\\nb");
        assert_eq!(echo(&"x".repeat(500)).chars().count(), MAX_ECHO + 1);
    }
}
