//! Certificates and CA keys, checked with `ssh-keygen -L` (which also verifies the CA signature).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use ssh_key::public::{Ed25519PublicKey, KeyData, SkEd25519};
use ssh_key::{HashAlg, PublicKey};
use stint_ssh::{CertRequest, SshError, UserCa, fingerprint};
use tempfile::TempDir;

use crate::support::{have_keygen, keygen, keygen_ok, new_key, request, write};

/// `ssh-keygen -L` output: the `Name: value` fields, and the indented items listed under each field.
#[derive(Debug)]
struct Shown {
    fields: BTreeMap<String, String>,
    items: BTreeMap<String, Vec<String>>,
}

fn show(cert: &Path) -> Shown {
    let text = keygen_ok(["-L", "-f", &cert.display().to_string()]);
    let mut shown = Shown {
        fields: BTreeMap::new(),
        items: BTreeMap::new(),
    };
    let mut current = String::new();
    for line in text.lines().skip(1) {
        let depth = line.len() - line.trim_start().len();
        if depth > 8 {
            shown
                .items
                .entry(current.clone())
                .or_default()
                .push(line.trim().to_owned());
        } else if let Some((name, value)) = line.trim().split_once(':') {
            current = name.to_owned();
            shown.fields.insert(current.clone(), value.trim().to_owned());
        }
    }
    shown
}

impl Shown {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map_or_else(|| panic!("no {name} in {self:#?}"), String::as_str)
    }
    fn items(&self, name: &str) -> Vec<&str> {
        self.items
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

fn write_cert(dir: &Path, name: &str, cert: &str) -> PathBuf {
    write(dir, &format!("{name}-cert.pub"), format!("{cert}\n"))
}

#[test]
fn certificate_fields_read_back_by_ssh_keygen() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let ca = UserCa::generate().unwrap();
    let (_, public) = new_key(dir.path(), "user", "ed25519", None);
    let principals = ["root".to_owned(), "deploy".to_owned()];
    let cert = ca
        .sign_user_cert(&CertRequest {
            public_key: &public,
            serial: 42,
            key_id: "sess-01931b6e-0c5d-7b5e",
            principals: &principals,
            valid_after: 1_700_000_000,
            valid_before: 1_700_003_600,
            force_command: Some("echo forced"),
            source_address: Some("10.0.0.0/8,192.0.2.7,2001:db8::/32"),
            extensions: &["permit-pty", "permit-port-forwarding"],
        })
        .unwrap();
    assert!(
        cert.starts_with("ssh-ed25519-cert-v01@openssh.com AAAA"),
        "{cert}"
    );
    assert_eq!(cert.lines().count(), 1);

    let shown = show(&write_cert(dir.path(), "user", &cert));
    assert_eq!(
        shown.field("Type"),
        "ssh-ed25519-cert-v01@openssh.com user certificate"
    );
    assert_eq!(
        shown.field("Public key"),
        format!("ED25519-CERT {}", fingerprint(&public).unwrap())
    );
    assert_eq!(
        shown.field("Signing CA"),
        format!("ED25519 {} (using ssh-ed25519)", ca.fingerprint())
    );
    assert_eq!(shown.field("Key ID"), "\"sess-01931b6e-0c5d-7b5e\"");
    assert_eq!(shown.field("Serial"), "42");
    assert_eq!(
        shown.field("Valid"),
        "from 2023-11-14T22:13:20 to 2023-11-14T23:13:20"
    );
    assert_eq!(shown.items("Principals"), ["root", "deploy"]);
    assert_eq!(
        shown.items("Critical Options"),
        [
            "force-command echo forced",
            "source-address 10.0.0.0/8,192.0.2.7,2001:db8::/32"
        ]
    );
    assert_eq!(
        shown.items("Extensions"),
        ["permit-port-forwarding", "permit-pty"]
    );
}

#[test]
fn minimal_certificate_has_no_options_or_extensions() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let ca = UserCa::generate().unwrap();
    let (_, public) = new_key(dir.path(), "user", "ed25519", None);
    let principals = ["alice".to_owned(), "alice".to_owned()];
    let cert = ca.sign_user_cert(&request(&public, &principals, 7)).unwrap();
    let shown = show(&write_cert(dir.path(), "user", &cert));
    assert_eq!(shown.field("Critical Options"), "(none)");
    assert_eq!(shown.field("Extensions"), "(none)");
    assert_eq!(shown.items("Principals"), ["alice"], "duplicates are dropped");
}

#[test]
fn tampered_certificate_fails_the_signature_check() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let ca = UserCa::generate().unwrap();
    let (_, public) = new_key(dir.path(), "user", "ed25519", None);
    let principals = ["root".to_owned()];
    let cert = ca.sign_user_cert(&request(&public, &principals, 1)).unwrap();
    // The blob ends with the 64-byte Ed25519 signature: change one base64 digit inside it.
    let mut bytes = cert.into_bytes();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = write(dir.path(), "tampered-cert.pub", bytes);
    let out = keygen(["-L", "-f", &tampered.display().to_string()]);
    assert!(
        !out.status.success(),
        "ssh-keygen accepted a tampered certificate: {out:?}"
    );
}

#[test]
fn every_accepted_key_type_gets_a_valid_certificate() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let ca = UserCa::generate().unwrap();
    let principals = ["root".to_owned()];
    let mut keys: Vec<(String, String)> = [
        ("ed25519", None, "ssh-ed25519"),
        ("ecdsa", Some(256), "ecdsa-sha2-nistp256"),
        ("ecdsa", Some(384), "ecdsa-sha2-nistp384"),
        ("ecdsa", Some(521), "ecdsa-sha2-nistp521"),
        ("rsa", Some(2048), "ssh-rsa"),
        ("rsa", Some(3072), "ssh-rsa"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (kind, bits, cert_prefix))| {
        (
            new_key(dir.path(), &format!("k{i}"), kind, bits).1,
            cert_prefix.to_owned(),
        )
    })
    .collect();
    // A FIDO security key can't be generated here; build its public key line directly.
    let sk = KeyData::SkEd25519(SkEd25519::new(Ed25519PublicKey([7; 32]), "ssh:".to_owned()));
    keys.push((
        PublicKey::new(sk, "sk@test").to_openssh().unwrap(),
        "sk-ssh-ed25519".to_owned(),
    ));

    for (i, (public, cert_prefix)) in keys.iter().enumerate() {
        let cert = ca
            .sign_user_cert(&request(public, &principals, 100 + i as u64))
            .unwrap();
        let expected_type = format!("{cert_prefix}-cert-v01@openssh.com");
        assert!(cert.starts_with(&format!("{expected_type} ")), "{cert}");
        let shown = show(&write_cert(dir.path(), &format!("c{i}"), &cert));
        assert_eq!(shown.field("Type"), format!("{expected_type} user certificate"));
        assert_eq!(shown.field("Serial"), (100 + i).to_string());
    }
}

#[test]
fn weak_unsupported_and_malformed_keys_are_refused() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let ca = UserCa::generate().unwrap();
    let principals = ["root".to_owned()];
    let (_, rsa1024) = new_key(dir.path(), "rsa1024", "rsa", Some(1024));
    let (_, ed) = new_key(dir.path(), "ed", "ed25519", None);
    let cert = ca.sign_user_cert(&request(&ed, &principals, 1)).unwrap();

    let sign = |public: &str| ca.sign_user_cert(&request(public, &principals, 1));
    assert!(matches!(sign(&rsa1024), Err(SshError::RsaKeySize { bits: 1024 })));
    assert!(matches!(sign(&cert), Err(SshError::CertificateNotAllowed)));
    for garbage in [
        "",
        "ssh-ed25519",
        "ssh-ed25519 AAAA",
        "ssh-ed25519 !!!!",
        "hello world",
        &format!("{ed}\n{ed}"),
    ] {
        assert!(
            matches!(sign(garbage), Err(SshError::InvalidPublicKey)),
            "{garbage:?}"
        );
    }
    // A key whose text type disagrees with its blob.
    let mislabeled = ed.replacen("ssh-ed25519", "ssh-rsa", 1);
    assert!(sign(&mislabeled).is_err());
    assert!(matches!(fingerprint(&cert), Err(SshError::CertificateNotAllowed)));

    // DSA: OpenSSH 9.2 still generates it; newer releases may not.
    let dsa = keygen([
        "-q",
        "-t",
        "dsa",
        "-N",
        "",
        "-f",
        &dir.path().join("dsa").display().to_string(),
    ]);
    if dsa.status.success() {
        let public = fs::read_to_string(dir.path().join("dsa.pub")).unwrap();
        let err = sign(&public).unwrap_err();
        assert!(matches!(err, SshError::UnsupportedKeyAlgorithm { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "`ssh-dss` keys are not accepted; use ed25519, ecdsa or rsa (2048 bits or more)"
        );
    }
}

#[test]
fn invalid_requests_are_refused() {
    let ca = UserCa::generate().unwrap();
    let ed = ca.public_key_openssh(); // any valid plain key will do as the subject
    let root = ["root".to_owned()];
    let ok = request(&ed, &root, 1);
    assert!(ca.sign_user_cert(&ok).is_ok());

    let none: [String; 0] = [];
    let blank = ["".to_owned()];
    let newline = ["a\nb".to_owned()];
    let spaced = [" root".to_owned()];
    let refuse = |req: CertRequest<'_>| ca.sign_user_cert(&req).expect_err("request should be refused");
    use SshError as E;
    assert!(matches!(refuse(CertRequest { serial: 0, ..ok }), E::ZeroSerial));
    assert!(matches!(
        refuse(CertRequest { key_id: "", ..ok }),
        E::InvalidKeyId
    ));
    assert!(matches!(
        refuse(CertRequest { key_id: "a\0b", ..ok }),
        E::InvalidKeyId
    ));
    assert!(matches!(
        refuse(CertRequest {
            principals: &none,
            ..ok
        }),
        E::NoPrincipals
    ));
    assert!(matches!(
        refuse(CertRequest {
            principals: &blank,
            ..ok
        }),
        E::InvalidPrincipal { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            principals: &newline,
            ..ok
        }),
        E::InvalidPrincipal { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            principals: &spaced,
            ..ok
        }),
        E::InvalidPrincipal { .. }
    ));
    let (after, before) = (ok.valid_after, ok.valid_before);
    assert!(matches!(
        refuse(CertRequest {
            valid_before: after,
            ..ok
        }),
        E::InvalidValidity { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            valid_before: after - 1,
            ..ok
        }),
        E::InvalidValidity { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            valid_before: u64::MAX,
            ..ok
        }),
        E::InvalidValidity { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            valid_after: before,
            ..ok
        }),
        E::InvalidValidity { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            force_command: Some(""),
            ..ok
        }),
        E::InvalidForceCommand
    ));
    assert!(matches!(
        refuse(CertRequest {
            force_command: Some("ls\nrm x"),
            ..ok
        }),
        E::InvalidForceCommand
    ));
    let bad_source = CertRequest {
        source_address: Some("10.0.0.1/8"),
        ..ok
    };
    assert!(matches!(refuse(bad_source), E::InvalidSourceAddress { .. }));
    assert!(matches!(
        refuse(CertRequest {
            source_address: Some(""),
            ..ok
        }),
        E::InvalidSourceAddress { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            extensions: &["permit-all"],
            ..ok
        }),
        E::UnknownExtension { .. }
    ));
    assert!(matches!(
        refuse(CertRequest {
            extensions: &["@example.com"],
            ..ok
        }),
        E::UnknownExtension { .. }
    ));
    // Custom `name@domain` extensions are allowed.
    assert!(
        ca.sign_user_cert(&CertRequest {
            extensions: &["stint-session@example.com"],
            ..ok
        })
        .is_ok()
    );
}

#[test]
fn error_messages_follow_the_style_guide() {
    let ca = UserCa::generate().unwrap();
    let ed = ca.public_key_openssh();
    let bad_principal = ["bad\u{7}name".to_owned()];
    let err = ca.sign_user_cert(&request(&ed, &bad_principal, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid principal `bad\\u{7}name`: must be non-empty printable text"
    );
    let root = ["root".to_owned()];
    let err = ca.sign_user_cert(&CertRequest {
        source_address: Some("10.0.0.1/8"),
        ..request(&ed, &root, 1)
    });
    assert_eq!(
        err.unwrap_err().to_string(),
        "invalid source address list `10.0.0.1/8`: entry `10.0.0.1/8` has host bits set after the prefix \
         (OpenSSH refuses it)"
    );
}

#[test]
fn source_address_checks_never_accept_what_openssh_refuses() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let (ca_key, ca_public) = new_key(dir.path(), "ca", "ed25519", None);
    let (user_key, user_public) = new_key(dir.path(), "user", "ed25519", None);
    let ca = UserCa::from_openssh(&fs::read_to_string(&ca_key).unwrap()).unwrap();
    assert_eq!(ca.fingerprint(), fingerprint(&ca_public).unwrap());
    let root = ["root".to_owned()];
    let openssh_accepts = |list: &str| {
        let out = keygen([
            "-q",
            "-s",
            &ca_key.display().to_string(),
            "-I",
            "probe",
            "-n",
            "root",
            "-O",
            &format!("source-address={list}"),
            &user_key.with_extension("pub").display().to_string(),
        ]);
        out.status.success()
    };
    let candidates = [
        "127.0.0.1",
        "127.0.0.1/32",
        "10.0.0.0/8",
        "0.0.0.0/0",
        "::1",
        "::/0",
        "2001:db8::/32",
        "::ffff:192.0.2.1",
        "10.0.0.0/8,192.168.0.0/16,fe80::/10",
        "10.0.0.1/8",
        "10.0.0.0/33",
        "2001:db8::1/32",
        "10.0.0.0/8,",
        ",10.0.0.0/8",
        "10.0.0.0/8,,::1",
        "example.com",
        "10.0.0.*",
        "!10.0.0.0/8",
        "10.0.0.0 /8",
        "10.0.0.0/-1",
        "1.2.3",
        "1.2.3.4.5",
        "fe80::1%lo",
        "12345::",
        "a.b.c.d",
    ];
    for list in candidates {
        let ours = ca.sign_user_cert(&CertRequest {
            source_address: Some(list),
            ..request(&user_public, &root, 1)
        });
        if ours.is_ok() {
            assert!(
                openssh_accepts(list),
                "we accept {list:?} but ssh-keygen refuses it"
            );
        } else {
            assert!(
                matches!(ours, Err(SshError::InvalidSourceAddress { .. })),
                "{list:?}: {ours:?}"
            );
        }
    }
    // And the common, well-formed cases are accepted by both.
    for list in &candidates[..9] {
        assert!(openssh_accepts(list), "{list}");
    }
}

#[test]
fn fingerprints_match_ssh_keygen() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    for (i, (kind, bits)) in [("ed25519", None), ("ecdsa", Some(384)), ("rsa", Some(2048))]
        .into_iter()
        .enumerate()
    {
        let (key, public) = new_key(dir.path(), &format!("k{i}"), kind, bits);
        let listed = keygen_ok([
            "-l",
            "-E",
            "sha256",
            "-f",
            &key.with_extension("pub").display().to_string(),
        ]);
        let expected = listed.split_whitespace().nth(1).unwrap();
        assert_eq!(fingerprint(&public).unwrap(), expected, "{kind}");
        // Surrounding whitespace and a missing comment don't matter.
        let bare = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        assert_eq!(fingerprint(&format!("  {bare}\n")).unwrap(), expected);
    }
}

#[test]
fn generated_ca_round_trips_through_the_openssh_format() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let ca = UserCa::generate().unwrap();
    let pem = ca.to_openssh().unwrap();
    assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));

    // OpenSSH reads the key and derives the same public key.
    let path = dir.path().join("ca");
    fs::write(&path, pem.as_bytes()).unwrap();
    set_private(&path);
    let derived = keygen_ok(["-y", "-f", &path.display().to_string()]);
    let first_two = |line: &str| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(first_two(&derived), first_two(&ca.public_key_openssh()));
    assert!(ca.public_key_openssh().starts_with("ssh-ed25519 AAAA"));

    let reloaded = UserCa::from_openssh(&pem).unwrap();
    assert_eq!(reloaded.public_key_openssh(), ca.public_key_openssh());
    assert_eq!(reloaded.public_key_blob(), ca.public_key_blob());

    // The blob is the wire encoding of the public key line.
    let parsed = PublicKey::from_openssh(&ca.public_key_openssh()).unwrap();
    assert_eq!(parsed.to_bytes().unwrap(), ca.public_key_blob());
    assert_eq!(&ca.public_key_blob()[..15], b"\0\0\0\x0bssh-ed25519");
    assert_eq!(parsed.fingerprint(HashAlg::Sha256).to_string(), ca.fingerprint());
}

#[test]
fn debug_and_errors_never_show_key_material() {
    if !have_keygen() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let ca = UserCa::generate().unwrap();
    let pem = ca.to_openssh().unwrap();
    let secret_lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let debug = format!("{ca:?}");
    assert!(debug.contains(&ca.fingerprint()), "{debug}");
    for line in &secret_lines {
        assert!(!debug.contains(line));
    }

    // Loading refuses other algorithms, encrypted keys and junk, without echoing the key.
    let (rsa, _) = new_key(dir.path(), "rsa", "rsa", Some(2048));
    let rsa_pem = fs::read_to_string(&rsa).unwrap();
    let encrypted = dir.path().join("enc");
    keygen_ok([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "correct horse",
        "-f",
        &encrypted.display().to_string(),
    ]);
    let encrypted_pem = fs::read_to_string(&encrypted).unwrap();
    let truncated = &pem[..pem.len() / 2];
    type Check = fn(&SshError) -> bool;
    let cases: [(&str, Check); 5] = [
        (
            &rsa_pem,
            |e| matches!(e, SshError::UnsupportedCaAlgorithm { algorithm } if algorithm == "ssh-rsa"),
        ),
        (&encrypted_pem, |e| matches!(e, SshError::EncryptedCaKey)),
        (truncated, |e| matches!(e, SshError::InvalidCaKey)),
        ("", |e| matches!(e, SshError::InvalidCaKey)),
        (&ca.public_key_openssh(), |e| matches!(e, SshError::InvalidCaKey)),
    ];
    for (input, expected) in cases {
        let err = UserCa::from_openssh(input).unwrap_err();
        assert!(expected(&err), "{err:?}");
        let shown = format!("{err} {err:?}");
        for line in input.lines().filter(|l| !l.starts_with("-----") && l.len() > 8) {
            assert!(!shown.contains(line), "error shows key material: {shown}");
        }
    }
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}
