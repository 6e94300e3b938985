//! Certificates and KRLs against a real sshd (needs `STINT_TEST_SSHD`, root, and `/usr/bin/ssh`).

use std::path::PathBuf;

use stint_ssh::{CertRequest, UserCa, encode_krl};
use tempfile::TempDir;

use crate::support::{Sshd, new_key, now_unix, request, sshd_bin, write};

/// An sshd trusting `ca`, a client key, and the KRL file sshd reads.
struct Fixture {
    dir: TempDir,
    ca: UserCa,
    key: PathBuf,
    public: String,
    krl: PathBuf,
    sshd: Sshd,
}

impl Fixture {
    /// `None` when the sshd tests are skipped.
    fn start() -> Option<Fixture> {
        let bin = sshd_bin()?;
        let dir = TempDir::new().unwrap();
        let ca = UserCa::generate().unwrap();
        let (key, public) = new_key(dir.path(), "user", "ed25519", None);
        let krl = write(
            dir.path(),
            "revoked.krl",
            encode_krl(&ca.public_key_blob(), &[], 1, now_unix(), ""),
        );
        let sshd = Sshd::start(&bin, &ca.public_key_openssh(), &krl);
        Some(Fixture {
            dir,
            ca,
            key,
            public,
            krl,
            sshd,
        })
    }

    fn cert_file(&self, name: &str, cert: &str) -> PathBuf {
        write(self.dir.path(), &format!("{name}-cert.pub"), format!("{cert}\n"))
    }

    /// A certificate for `root` from this fixture's CA.
    fn root_cert(&self, serial: u64) -> PathBuf {
        let root = ["root".to_owned()];
        let cert = self
            .ca
            .sign_user_cert(&request(&self.public, &root, serial))
            .unwrap();
        self.cert_file(&format!("root-{serial}"), &cert)
    }

    fn publish_krl(&self, serials: &[u64], version: u64) {
        // Write-then-rename, as a real publisher must: sshd reads the file on every attempt and refuses
        // everything if it catches a half-written KRL.
        let tmp = write(
            self.dir.path(),
            "revoked.krl.tmp",
            encode_krl(&self.ca.public_key_blob(), serials, version, now_unix(), ""),
        );
        std::fs::rename(tmp, &self.krl).unwrap();
    }
}

#[test]
fn valid_certificate_logs_in() {
    let Some(f) = Fixture::start() else { return };
    let cert = f.root_cert(11);
    assert!(f.sshd.try_login("root", &f.key, &cert));
    f.sshd.assert_logged("Accepted publickey for root from 127.0.0.1");
    f.sshd.assert_logged("ID test-session (serial 11) CA ED25519");

    // A non-Ed25519 client key works the same way.
    let (ecdsa_key, ecdsa_public) = new_key(f.dir.path(), "ecdsa", "ecdsa", Some(256));
    let root = ["root".to_owned()];
    let cert = f.ca.sign_user_cert(&request(&ecdsa_public, &root, 12)).unwrap();
    assert!(f.sshd.try_login("root", &ecdsa_key, &f.cert_file("ecdsa", &cert)));
    f.sshd.assert_logged("ECDSA-CERT");
}

#[test]
fn revocation_applies_to_the_next_login_without_restarting_sshd() {
    let Some(f) = Fixture::start() else { return };
    let revoked = f.root_cert(21);
    let other = f.root_cert(22);
    assert!(f.sshd.try_login("root", &f.key, &revoked));

    f.publish_krl(&[20, 21], 2);
    assert!(
        !f.sshd.try_login("root", &f.key, &revoked),
        "a revoked certificate still logs in"
    );
    f.sshd.assert_logged("revoked by file");
    assert!(
        f.sshd.try_login("root", &f.key, &other),
        "revoking serial 21 blocked serial 22"
    );

    // sshd re-reads the file each time in both directions: un-revoking works at once too.
    f.publish_krl(&[], 3);
    assert!(f.sshd.try_login("root", &f.key, &revoked));
}

#[test]
fn expired_certificate_is_refused() {
    let Some(f) = Fixture::start() else { return };
    let now = now_unix();
    let root = ["root".to_owned()];
    let req = CertRequest {
        valid_after: now - 3600,
        valid_before: now - 60,
        ..request(&f.public, &root, 31)
    };
    let cert = f.cert_file("expired", &f.ca.sign_user_cert(&req).unwrap());
    assert!(!f.sshd.try_login("root", &f.key, &cert));
    f.sshd.assert_logged("Certificate invalid: expired");
}

#[test]
fn not_yet_valid_certificate_is_refused() {
    let Some(f) = Fixture::start() else { return };
    let now = now_unix();
    let root = ["root".to_owned()];
    let req = CertRequest {
        valid_after: now + 600,
        valid_before: now + 1200,
        ..request(&f.public, &root, 32)
    };
    let cert = f.cert_file("future", &f.ca.sign_user_cert(&req).unwrap());
    assert!(!f.sshd.try_login("root", &f.key, &cert));
    f.sshd.assert_logged("Certificate invalid: not yet valid");
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let Some(f) = Fixture::start() else { return };
    let other_ca = UserCa::generate().unwrap();
    let root = ["root".to_owned()];
    let cert = f.cert_file(
        "other-ca",
        &other_ca.sign_user_cert(&request(&f.public, &root, 41)).unwrap(),
    );
    assert!(!f.sshd.try_login("root", &f.key, &cert));
    f.sshd.assert_logged("Failed publickey for root from 127.0.0.1");
    f.sshd
        .assert_logged(&format!("(serial 41) CA ED25519 {}", other_ca.fingerprint()));
}

#[test]
fn wrong_principal_is_refused() {
    let Some(f) = Fixture::start() else { return };
    let principals = ["alice".to_owned(), "deploy".to_owned()];
    let cert = f.cert_file(
        "alice",
        &f.ca.sign_user_cert(&request(&f.public, &principals, 51)).unwrap(),
    );
    assert!(!f.sshd.try_login("root", &f.key, &cert));
    f.sshd
        .assert_logged("Certificate invalid: name is not a listed principal");
}

#[test]
fn force_command_replaces_the_requested_command() {
    let Some(f) = Fixture::start() else { return };
    let root = ["root".to_owned()];
    let req = CertRequest {
        force_command: Some("echo forced-by-cert"),
        ..request(&f.public, &root, 61)
    };
    let cert = f.cert_file("forced", &f.ca.sign_user_cert(&req).unwrap());
    let out = f.sshd.login("root", &f.key, &cert, "echo requested");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "forced-by-cert\n");
}

#[test]
fn source_address_is_enforced() {
    let Some(f) = Fixture::start() else { return };
    let root = ["root".to_owned()];
    let elsewhere = CertRequest {
        source_address: Some("10.0.0.0/8,2001:db8::/32"),
        ..request(&f.public, &root, 71)
    };
    let cert = f.cert_file("elsewhere", &f.ca.sign_user_cert(&elsewhere).unwrap());
    assert!(!f.sshd.try_login("root", &f.key, &cert));
    f.sshd
        .assert_logged("not from a permitted source address (127.0.0.1)");

    let here = CertRequest {
        source_address: Some("10.0.0.0/8,127.0.0.1/32"),
        ..request(&f.public, &root, 72)
    };
    let cert = f.cert_file("here", &f.ca.sign_user_cert(&here).unwrap());
    assert!(f.sshd.try_login("root", &f.key, &cert));
}

#[test]
fn unreadable_krl_refuses_every_certificate() {
    let Some(f) = Fixture::start() else { return };
    let cert = f.root_cert(81);
    // A truncated KRL, as a reader could see mid-write without write-then-rename.
    let full = encode_krl(&f.ca.public_key_blob(), &[5], 4, now_unix(), "");
    write(f.dir.path(), "revoked.krl", &full[..full.len() - 3]);
    assert!(
        !f.sshd.try_login("root", &f.key, &cert),
        "sshd must fail closed on a broken KRL"
    );
    f.sshd.assert_logged("Error checking authentication key");

    f.publish_krl(&[5], 5);
    assert!(f.sshd.try_login("root", &f.key, &cert));
}
