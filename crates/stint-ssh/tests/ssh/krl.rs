//! KRLs from `encode_krl`, checked with `ssh-keygen -Q` (and its `-l` dump).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use stint_ssh::{UserCa, encode_krl, krl_revokes};
use tempfile::TempDir;

use crate::support::{have_keygen, keygen, keygen_ok, new_key, request, write};

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// A CA and a client key, with certificates for any serial on demand.
struct Fixture {
    dir: TempDir,
    ca: UserCa,
    public: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new().unwrap();
        let (_, public) = new_key(dir.path(), "user", "ed25519", None);
        Fixture {
            dir,
            ca: UserCa::generate().unwrap(),
            public,
        }
    }

    fn cert(&self, ca: &UserCa, serial: u64) -> PathBuf {
        let principals = ["root".to_owned()];
        let cert = ca
            .sign_user_cert(&request(&self.public, &principals, serial))
            .unwrap();
        let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
        write(
            self.dir.path(),
            &format!("c{n}-serial-{serial}-cert.pub"),
            cert + "\n",
        )
    }

    fn krl(&self, serials: &[u64]) -> PathBuf {
        let krl = encode_krl(
            &self.ca.public_key_blob(),
            serials,
            3,
            1_700_000_000,
            "stint test",
        );
        write(self.dir.path(), "krl", krl)
    }

    /// `ssh-keygen -Q` on certificates of this CA with these serials: which ones it reports revoked.
    /// `krl_revokes` must agree with ssh-keygen on every one.
    fn revoked(&self, krl: &Path, serials: &[u64]) -> BTreeSet<u64> {
        let certs: Vec<PathBuf> = serials.iter().map(|&s| self.cert(&self.ca, s)).collect();
        let bytes = std::fs::read(krl).unwrap();
        let blob = self.ca.public_key_blob();
        let verdicts = query(krl, &certs);
        for (&serial, &revoked) in serials.iter().zip(&verdicts) {
            assert_eq!(
                krl_revokes(&bytes, &blob, serial).unwrap(),
                revoked,
                "serial {serial}"
            );
        }
        serials
            .iter()
            .zip(verdicts)
            .filter(|(_, revoked)| *revoked)
            .map(|(&s, _)| s)
            .collect()
    }
}

/// Runs `ssh-keygen -Q -f krl certs...` and returns, per certificate, whether it is revoked.
fn query(krl: &Path, certs: &[PathBuf]) -> Vec<bool> {
    let mut args = vec!["-Q".to_owned(), "-f".to_owned(), krl.display().to_string()];
    args.extend(certs.iter().map(|c| c.display().to_string()));
    let out = keygen(&args);
    let verdicts: Vec<bool> = out
        .stdout
        .lines()
        .map(|line| match line.rsplit_once(": ") {
            Some((_, "REVOKED")) => true,
            Some((_, "ok")) => false,
            _ => panic!("unexpected ssh-keygen -Q line {line:?}: {out:?}"),
        })
        .collect();
    assert_eq!(verdicts.len(), certs.len(), "{out:?}");
    // Exit status: 1 if anything was revoked, 0 if nothing was (255 would mean the KRL did not parse).
    assert_eq!(
        out.status.code(),
        Some(i32::from(verdicts.contains(&true))),
        "{out:?}"
    );
    verdicts
}

#[test]
fn revoked_serial_is_reported_and_its_neighbours_are_not() {
    if !have_keygen() {
        return;
    }
    let f = Fixture::new();
    let krl = f.krl(&[5]);
    assert_eq!(f.revoked(&krl, &[4, 5, 6]), BTreeSet::from([5]));
}

#[test]
fn ranges_revoke_exactly_their_serials() {
    if !have_keygen() {
        return;
    }
    let f = Fixture::new();
    let revoked: Vec<u64> = [3, 4, 5, 6, 10, 11, 14].into_iter().chain(20..=30).collect();
    let krl = f.krl(&revoked);
    let probe: Vec<u64> = (1..=32).collect();
    assert_eq!(f.revoked(&krl, &probe), revoked.iter().copied().collect());

    // ssh-keygen's dump of the KRL shows the header and the coalesced runs.
    let dump = keygen_ok(["-Q", "-l", "-f", &krl.display().to_string()]);
    assert!(dump.contains("# KRL version 3\n"), "{dump}");
    assert!(dump.contains("# Comment: stint test\n"), "{dump}");
    assert!(
        dump.contains(&format!("# CA key ssh-ed25519 {}\n", f.ca.fingerprint())),
        "{dump}"
    );
    let serial_lines: Vec<&str> = dump.lines().filter(|l| l.starts_with("serial:")).collect();
    assert_eq!(
        serial_lines,
        ["serial: 3-6", "serial: 10-11", "serial: 14", "serial: 20-30"],
        "{dump}"
    );
}

#[test]
fn empty_krl_is_valid_and_revokes_nothing() {
    if !have_keygen() {
        return;
    }
    let f = Fixture::new();
    for serials in [&[][..], &[0, 0]] {
        let krl = f.krl(serials);
        assert!(f.revoked(&krl, &[1, 2, u64::MAX]).is_empty());
        let dump = keygen_ok(["-Q", "-l", "-f", &krl.display().to_string()]);
        assert!(dump.contains("# KRL version 3\n"), "{dump}");
        assert!(!dump.contains("serial"), "{dump}");
    }
}

#[test]
fn many_serials_and_extremes_round_trip() {
    if !have_keygen() {
        return;
    }
    let f = Fixture::new();
    // Pseudo-random serials (with duplicates and runs), plus the top of the range.
    let mut state: u64 = 0x0123_4567_89ab_cdef;
    let mut revoked: Vec<u64> = (0..5000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            1 + (state >> 33) % 20_000
        })
        .collect();
    revoked.extend(u64::MAX - 2..=u64::MAX);
    let krl = f.krl(&revoked);
    let set: BTreeSet<u64> = revoked.iter().copied().collect();

    let mut probe: Vec<u64> = set.iter().copied().step_by(97).take(30).collect();
    probe.extend((1..20_000).filter(|s| !set.contains(s)).step_by(53).take(30));
    probe.extend([u64::MAX - 3, u64::MAX - 2, u64::MAX]);
    let expected: BTreeSet<u64> = probe.iter().copied().filter(|s| set.contains(s)).collect();
    assert!(expected.len() > 30 && expected.len() < probe.len());
    assert_eq!(f.revoked(&krl, &probe), expected);
}

#[test]
fn krl_only_revokes_certificates_of_its_own_ca() {
    if !have_keygen() {
        return;
    }
    let f = Fixture::new();
    let other_ca = UserCa::generate().unwrap();
    let krl = f.krl(&[9]);
    let ours = f.cert(&f.ca, 9);
    let theirs = f.cert(&other_ca, 9);
    assert_eq!(query(&krl, &[ours, theirs]), [true, false]);
}
