//! OpenSSH key revocation lists (KRL), the binary format of OpenSSH's `PROTOCOL.krl`.
//!
//! Only what stint needs: one certificates section revoking serials of one CA, as a serial list plus
//! serial ranges, and a reader for exactly that. sshd reads the file named by `RevokedKeys` on every
//! authentication attempt, and refuses every certificate while that file cannot be parsed.

use crate::SshError;

/// `SSHKRL\n\0`, written as eight raw bytes.
const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const KRL_FORMAT_VERSION: u32 = 1;
const KRL_SECTION_CERTIFICATES: u8 = 1;
const KRL_SECTION_CERT_SERIAL_LIST: u8 = 0x20;
const KRL_SECTION_CERT_SERIAL_RANGE: u8 = 0x21;

/// Runs of at least this many consecutive serials become one range subsection (21 bytes) instead of
/// list entries (8 bytes each).
const MIN_RANGE_RUN: u64 = 3;

/// Encodes a KRL revoking the certificates with the given serials issued by one CA.
///
/// - `ca_public_key_blob` is the CA public key in wire format, as [`crate::UserCa::public_key_blob`]
///   returns it. sshd refuses every certificate if it cannot parse the KRL, so pass a real key blob.
/// - `revoked_serials` may be in any order and hold duplicates; they are sorted and deduplicated, and
///   consecutive runs are written as ranges. Serial 0 is skipped: OpenSSH cannot revoke it by serial (a
///   KRL naming it fails to load), which is why [`crate::UserCa::sign_user_cert`] never issues it.
/// - With no serials the KRL has just its header; sshd accepts it and revokes nothing.
/// - `krl_version` should grow with every KRL published; `generated_at_unix` is informational.
/// - NUL characters are dropped from `comment` (OpenSSH reads it as a C string).
///
/// # Panics
///
/// If the encoded certificates section would exceed 4 GiB, i.e. with more than about 500 million
/// isolated serials.
pub fn encode_krl(
    ca_public_key_blob: &[u8],
    revoked_serials: &[u64],
    krl_version: u64,
    generated_at_unix: u64,
    comment: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + ca_public_key_blob.len() + revoked_serials.len() * 8);
    out.extend_from_slice(KRL_MAGIC);
    put_u32(&mut out, KRL_FORMAT_VERSION);
    put_u64(&mut out, krl_version);
    put_u64(&mut out, generated_at_unix);
    put_u64(&mut out, 0); // flags: none defined
    put_string(&mut out, b""); // reserved
    put_string(&mut out, comment.replace('\0', "").as_bytes());

    let runs = serial_runs(revoked_serials);
    if runs.is_empty() {
        return out;
    }

    let mut section = Vec::new();
    put_string(&mut section, ca_public_key_blob);
    put_string(&mut section, b""); // reserved

    let mut list = Vec::new();
    for &(lo, hi) in runs.iter().filter(|(lo, hi)| hi - lo + 1 < MIN_RANGE_RUN) {
        for serial in lo..=hi {
            put_u64(&mut list, serial);
        }
    }
    if !list.is_empty() {
        section.push(KRL_SECTION_CERT_SERIAL_LIST);
        put_string(&mut section, &list);
    }
    // Each range subsection holds exactly one range.
    for &(lo, hi) in runs.iter().filter(|(lo, hi)| hi - lo + 1 >= MIN_RANGE_RUN) {
        let mut range = [0u8; 16];
        range[..8].copy_from_slice(&lo.to_be_bytes());
        range[8..].copy_from_slice(&hi.to_be_bytes());
        section.push(KRL_SECTION_CERT_SERIAL_RANGE);
        put_string(&mut section, &range);
    }

    out.push(KRL_SECTION_CERTIFICATES);
    put_string(&mut out, &section);
    out
}

/// Sorted, disjoint, non-adjacent inclusive runs `(lo, hi)` covering exactly the non-zero serials.
fn serial_runs(serials: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted: Vec<u64> = serials.iter().copied().filter(|&s| s != 0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for serial in sorted {
        match runs.last_mut() {
            // `hi < serial` after dedup, so `hi + 1` cannot overflow.
            Some((_, hi)) if *hi + 1 == serial => *hi = serial,
            _ => runs.push((serial, serial)),
        }
    }
    runs
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// An SSH `string`: a u32 big-endian length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // INVARIANT: strings stay below 4 GiB; the one exception is the documented panic of `encode_krl`.
    let len = u32::try_from(bytes.len()).expect("KRL string longer than 4 GiB");
    put_u32(out, len);
    out.extend_from_slice(bytes);
}

/// Whether `krl` revokes the certificate with serial `serial` issued by the CA `ca_public_key_blob`.
///
/// Reads what [`encode_krl`] writes: certificates sections with serial lists and serial ranges (a
/// section with an empty CA key applies to every CA). Anything else — other section types, serial
/// bitmaps as `ssh-keygen -k` may write, trailing or truncated data — is an error, never a guess. Use it
/// to check a KRL file on disk before trusting it; it never panics.
pub fn krl_revokes(krl: &[u8], ca_public_key_blob: &[u8], serial: u64) -> Result<bool, SshError> {
    let unreadable = |reason: &'static str| SshError::UnreadableKrl { reason };
    let mut r = Reader(krl);
    if r.take(KRL_MAGIC.len()) != Some(KRL_MAGIC) {
        return Err(unreadable("it does not start with the KRL magic"));
    }
    if r.u32() != Some(KRL_FORMAT_VERSION) {
        return Err(unreadable("unsupported format version"));
    }
    let truncated = || unreadable("it is truncated");
    // krl_version, generated_date, flags, reserved, comment
    r.take(24).ok_or_else(truncated)?;
    r.string().ok_or_else(truncated)?;
    r.string().ok_or_else(truncated)?;

    let mut revoked = false;
    while !r.is_empty() {
        let kind = r.u8().ok_or_else(truncated)?;
        let mut section = Reader(r.string().ok_or_else(truncated)?);
        if kind != KRL_SECTION_CERTIFICATES {
            return Err(unreadable("it has a section other than certificates"));
        }
        let ca_key = section.string().ok_or_else(truncated)?;
        section.string().ok_or_else(truncated)?; // reserved
        let applies = ca_key.is_empty() || ca_key == ca_public_key_blob;
        while !section.is_empty() {
            let sub_kind = section.u8().ok_or_else(truncated)?;
            let mut sub = Reader(section.string().ok_or_else(truncated)?);
            match sub_kind {
                KRL_SECTION_CERT_SERIAL_LIST => {
                    while !sub.is_empty() {
                        let listed = sub.u64().ok_or_else(truncated)?;
                        revoked |= applies && listed == serial;
                    }
                }
                KRL_SECTION_CERT_SERIAL_RANGE => {
                    let (lo, hi) = (sub.u64().ok_or_else(truncated)?, sub.u64().ok_or_else(truncated)?);
                    if !sub.is_empty() {
                        return Err(unreadable("a serial range subsection has trailing data"));
                    }
                    revoked |= applies && (lo..=hi).contains(&serial);
                }
                _ => {
                    return Err(unreadable(
                        "it has a certificate subsection other than serial lists and ranges",
                    ));
                }
            }
        }
    }
    Ok(revoked)
}

/// Reads SSH wire-format values; every read is `None` when the input runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// What a KRL decodes to: header fields and the revoked serials as inclusive ranges.
    #[derive(Debug, PartialEq)]
    struct Decoded {
        version: u64,
        generated: u64,
        comment: String,
        ca_key: Option<Vec<u8>>,
        list: Vec<u64>,
        ranges: Vec<(u64, u64)>,
    }

    /// A strict decoder written from PROTOCOL.krl, mirroring what OpenSSH's parser insists on.
    fn decode(krl: &[u8]) -> Decoded {
        let mut r = Reader(krl);
        assert_eq!(r.take(8).unwrap(), KRL_MAGIC);
        assert_eq!(r.u32().unwrap(), 1);
        let version = r.u64().unwrap();
        let generated = r.u64().unwrap();
        assert_eq!(r.u64().unwrap(), 0, "flags");
        assert_eq!(r.string().unwrap(), b"", "reserved");
        let comment = String::from_utf8(r.string().unwrap().to_vec()).unwrap();
        assert!(!comment.contains('\0'));
        let mut decoded = Decoded {
            version,
            generated,
            comment,
            ca_key: None,
            list: vec![],
            ranges: vec![],
        };
        while !r.is_empty() {
            assert_eq!(r.u8().unwrap(), KRL_SECTION_CERTIFICATES);
            assert!(decoded.ca_key.is_none(), "one certificates section");
            let mut section = Reader(r.string().unwrap());
            decoded.ca_key = Some(section.string().unwrap().to_vec());
            assert_eq!(section.string().unwrap(), b"", "reserved");
            while !section.is_empty() {
                let kind = section.u8().unwrap();
                let mut sub = Reader(section.string().unwrap());
                match kind {
                    KRL_SECTION_CERT_SERIAL_LIST => {
                        assert!(!sub.is_empty());
                        while !sub.is_empty() {
                            decoded.list.push(sub.u64().unwrap());
                        }
                    }
                    KRL_SECTION_CERT_SERIAL_RANGE => {
                        let (lo, hi) = (sub.u64().unwrap(), sub.u64().unwrap());
                        assert!(sub.is_empty(), "one range per subsection");
                        assert!(lo != 0 && lo <= hi, "OpenSSH refuses range {lo}..={hi}");
                        decoded.ranges.push((lo, hi));
                    }
                    other => panic!("unexpected subsection {other:#x}"),
                }
            }
        }
        decoded
    }

    fn revoked_set(decoded: &Decoded) -> Vec<u64> {
        let mut all: Vec<u64> = decoded.list.clone();
        for &(lo, hi) in &decoded.ranges {
            all.extend(lo..=hi);
        }
        all.sort_unstable();
        all
    }

    /// xorshift64*: deterministic pseudo-random input without a dev-dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn empty_serial_set_gives_header_only() {
        let krl = encode_krl(b"blob", &[], 7, 1_700_000_000, "stint");
        let decoded = decode(&krl);
        assert_eq!(decoded.version, 7);
        assert_eq!(decoded.generated, 1_700_000_000);
        assert_eq!(decoded.comment, "stint");
        assert_eq!(decoded.ca_key, None);
        assert_eq!(krl.len(), 8 + 4 + 8 * 3 + 4 + 4 + 5);
    }

    #[test]
    fn serial_zero_alone_gives_header_only() {
        assert_eq!(
            encode_krl(b"blob", &[0, 0], 1, 2, ""),
            encode_krl(b"blob", &[], 1, 2, "")
        );
    }

    #[test]
    fn serials_are_sorted_deduplicated_and_ranged() {
        let decoded = decode(&encode_krl(b"ca", &[9, 3, 5, 4, 3, 0, 20, 6, 21, 100], 1, 0, ""));
        assert_eq!(decoded.ca_key.as_deref(), Some(&b"ca"[..]));
        assert_eq!(decoded.list, vec![9, 20, 21, 100]);
        assert_eq!(decoded.ranges, vec![(3, 6)]);
    }

    #[test]
    fn extreme_serials_do_not_overflow() {
        let decoded = decode(&encode_krl(
            b"ca",
            &[u64::MAX, u64::MAX - 1, u64::MAX - 2, 1],
            1,
            0,
            "",
        ));
        assert_eq!(decoded.list, vec![1]);
        assert_eq!(decoded.ranges, vec![(u64::MAX - 2, u64::MAX)]);
    }

    #[test]
    fn nul_is_dropped_from_comment() {
        assert_eq!(decode(&encode_krl(b"ca", &[1], 1, 0, "a\0b")).comment, "ab");
    }

    #[test]
    fn random_serial_sets_round_trip_exactly() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for round in 0..300 {
            let len = (next(&mut state) % 200) as usize;
            // Small spans make runs and duplicates common; every tenth round uses the full u64 range.
            let span = if round % 10 == 0 {
                u64::MAX
            } else {
                1 + next(&mut state) % 400
            };
            let serials: Vec<u64> = (0..len).map(|_| next(&mut state) % span).collect();
            let decoded = decode(&encode_krl(b"ca", &serials, round, 0, ""));

            let mut expected: Vec<u64> = serials.iter().copied().filter(|&s| s != 0).collect();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(revoked_set(&decoded), expected, "round {round}");
            assert!(
                decoded.list.windows(2).all(|w| w[0] < w[1]),
                "list sorted and unique"
            );
            assert!(decoded.ranges.iter().all(|(lo, hi)| hi - lo + 1 >= MIN_RANGE_RUN));
            assert!(
                decoded.ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                "ranges disjoint, not adjacent"
            );
            assert_eq!(decoded.ca_key.is_some(), !expected.is_empty());
        }
    }

    #[test]
    fn output_does_not_depend_on_input_order() {
        let mut serials: Vec<u64> = (1..=50).chain([70, 72, 74]).collect();
        let forward = encode_krl(b"ca", &serials, 3, 4, "c");
        serials.reverse();
        assert_eq!(encode_krl(b"ca", &serials, 3, 4, "c"), forward);
    }

    #[test]
    fn reader_agrees_with_the_encoder() {
        let mut state = 0x51_7cc1_b727_220a;
        for round in 0..100 {
            let span = 1 + next(&mut state) % 300;
            let serials: Vec<u64> = (0..next(&mut state) % 120)
                .map(|_| next(&mut state) % span)
                .collect();
            let krl = encode_krl(b"ca", &serials, round, 0, "");
            for probe in 0..=span + 1 {
                let expected = probe != 0 && serials.contains(&probe);
                assert_eq!(
                    krl_revokes(&krl, b"ca", probe).unwrap(),
                    expected,
                    "round {round} serial {probe}"
                );
                if expected {
                    assert!(!krl_revokes(&krl, b"other ca", probe).unwrap());
                }
            }
        }
        let krl = encode_krl(
            b"ca",
            &[u64::MAX - 5, u64::MAX - 4, u64::MAX - 3, u64::MAX],
            1,
            0,
            "",
        );
        assert!(krl_revokes(&krl, b"ca", u64::MAX - 4).unwrap());
        assert!(!krl_revokes(&krl, b"ca", u64::MAX - 1).unwrap());
    }

    #[test]
    fn reader_refuses_damaged_input_without_panicking() {
        let krl = encode_krl(b"ca", &[1, 2, 3, 7, 9], 1, 0, "comment");
        assert!(krl_revokes(&krl, b"ca", 2).unwrap());
        // Cut anywhere: an error, or (exactly at the end of the header) an empty KRL.
        for len in 0..krl.len() {
            match krl_revokes(&krl[..len], b"ca", 2) {
                Err(SshError::UnreadableKrl { .. }) | Ok(false) => {}
                other => panic!("prefix of {len} bytes gave {other:?}"),
            }
        }
        // Flip each byte: whatever comes out, nothing panics.
        for at in 0..krl.len() {
            let mut damaged = krl.clone();
            damaged[at] ^= 0xa5;
            let _ = krl_revokes(&damaged, b"ca", 2);
        }
        let mut trailing = krl.clone();
        trailing.push(KRL_SECTION_CERTIFICATES);
        assert!(krl_revokes(&trailing, b"ca", 2).is_err());
        assert!(krl_revokes(b"", b"ca", 2).is_err());
        let err = krl_revokes(b"not a krl at all", b"ca", 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the KRL cannot be read: it does not start with the KRL magic"
        );
    }
}
