//! Running the real OpenSSH tools: bounded in time, skipped (or failed under `CI=true`) when missing.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use stint_ssh::CertRequest;
use tempfile::TempDir;

pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
pub const SSH: &str = "/usr/bin/ssh";
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);
const SSHD_START_TIMEOUT: Duration = Duration::from_secs(10);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the calling test with a one-line reason, unless `CI=true`, where a missing tool is a failure.
pub fn skip(reason: &str) {
    assert!(!in_ci(), "{reason} (CI=true, so this test may not be skipped)");
    eprintln!("skipping: {reason}");
}

/// Whether `ssh-keygen` is there; otherwise skips (or fails under CI).
pub fn have_keygen() -> bool {
    if Path::new(SSH_KEYGEN).is_file() {
        return true;
    }
    skip(&format!("{SSH_KEYGEN} not found"));
    false
}

/// The sshd binary from `STINT_TEST_SSHD`; `None` skips (or fails under CI).
pub fn sshd_bin() -> Option<String> {
    let Some(bin) = std::env::var("STINT_TEST_SSHD").ok().filter(|b| !b.is_empty()) else {
        skip("STINT_TEST_SSHD is not set (e.g. STINT_TEST_SSHD=/usr/sbin/sshd)");
        return None;
    };
    assert!(
        Path::new(&bin).is_absolute(),
        "STINT_TEST_SSHD must be an absolute path (sshd re-executes itself)"
    );
    assert!(Path::new(&bin).is_file(), "STINT_TEST_SSHD={bin} does not exist");
    assert!(Path::new(SSH).is_file(), "{SSH} is needed for the sshd tests");
    assert!(have_keygen(), "{SSH_KEYGEN} is needed for the sshd tests");
    Some(bin)
}

/// Exit status and captured output of a finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    #[expect(dead_code, reason = "shown by Debug when an assertion fails")]
    pub stderr: String,
}

/// Runs `cmd` to completion, killing it (and failing) if it takes longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    // Files rather than pipes: nothing blocks on a full pipe while we poll.
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let status =
        wait_bounded(&mut child, timeout).unwrap_or_else(|| panic!("{cmd:?} ran longer than {timeout:?}"));
    Output {
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

/// Waits for `child` up to `timeout`; on timeout kills it and returns `None`.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn read_all(file: &mut File) -> String {
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    text
}

/// Runs `ssh-keygen` with `TZ=UTC` (so `-L` prints UTC times).
pub fn keygen<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(SSH_KEYGEN).env("TZ", "UTC").args(args), TOOL_TIMEOUT)
}

/// Like [`keygen`], but the command must succeed.
pub fn keygen_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = keygen(args);
    assert!(out.status.success(), "ssh-keygen failed: {out:?}");
    out.stdout
}

/// Generates a key with `ssh-keygen -t <kind> [-b bits]` in `dir`; returns (private key path, public line).
pub fn new_key(dir: &Path, name: &str, kind: &str, bits: Option<u32>) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut args: Vec<String> = vec!["-q".into(), "-t".into(), kind.into(), "-N".into(), String::new()];
    if let Some(bits) = bits {
        args.extend(["-b".into(), bits.to_string()]);
    }
    args.extend([
        "-C".into(),
        format!("{name}@test"),
        "-f".into(),
        path.display().to_string(),
    ]);
    keygen_ok(&args);
    let public = fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned();
    (path, public)
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    path
}

#[expect(
    clippy::disallowed_methods,
    reason = "sshd checks validity against the real clock"
)]
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A request valid from a minute ago for ten minutes, without options or extensions.
pub fn request<'a>(public_key: &'a str, principals: &'a [String], serial: u64) -> CertRequest<'a> {
    let now = now_unix();
    CertRequest {
        public_key,
        serial,
        key_id: "test-session",
        principals,
        valid_after: now - 60,
        valid_before: now + 600,
        force_command: None,
        source_address: None,
        extensions: &[],
    }
}

/// A real sshd on a free 127.0.0.1 port, trusting one user CA and reading one KRL; killed on drop.
pub struct Sshd {
    pub port: u16,
    dir: TempDir,
    child: Child,
}

impl Sshd {
    pub fn start(sshd_bin: &str, trusted_ca_pub: &str, krl_path: &Path) -> Sshd {
        // sshd's privilege separation needs this directory (it is a tmpfs, so often missing in containers).
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (the sshd tests must run as root)");
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_key");
        keygen_ok([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &host_key.display().to_string(),
        ]);
        let ca = write(dir.path(), "user_ca.pub", format!("{}\n", trusted_ca_pub.trim()));
        let log = dir.path().join("sshd.log");
        for _attempt in 0..5 {
            let port = free_port();
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nTrustedUserCAKeys {ca}\n\
                 RevokedKeys {krl}\nAuthorizedKeysFile none\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
                 PidFile {pid}\nUsePAM no\nLogLevel VERBOSE\n",
                host = host_key.display(),
                ca = ca.display(),
                krl = krl_path.display(),
                pid = dir.path().join("sshd.pid").display(),
            );
            let config = write(dir.path(), "sshd_config", config);
            let mut child = Command::new(sshd_bin)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {sshd_bin}: {e}"));
            let deadline = Instant::now() + SSHD_START_TIMEOUT;
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Server listening on") {
                    return Sshd { port, dir, child };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    if text.contains("Address already in use") {
                        break; // lost the port race: try another
                    }
                    panic!("sshd exited with {status} before listening:\n{text}");
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("sshd did not listen within {SSHD_START_TIMEOUT:?}:\n{text}");
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("sshd could not bind a free port in 5 attempts");
    }

    /// Runs `command` as `user` over ssh with `key` + `cert`.
    pub fn login(&self, user: &str, key: &Path, cert: &Path, command: &str) -> Output {
        run(
            Command::new(SSH)
                .args([
                    "-F",
                    "/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                ])
                .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes"])
                .args([
                    "-o",
                    "IdentityAgent=none",
                    "-o",
                    "ConnectTimeout=5",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .arg("-i")
                .arg(key)
                .arg("-o")
                .arg(format!("CertificateFile={}", cert.display()))
                .args(["-p", &self.port.to_string()])
                .arg(format!("{user}@127.0.0.1"))
                .arg(command),
            TOOL_TIMEOUT,
        )
    }

    /// Whether `user` can log in and run `true`.
    pub fn try_login(&self, user: &str, key: &Path, cert: &Path) -> bool {
        self.login(user, key, cert, "true").status.success()
    }

    /// Waits (briefly) until sshd's log contains `needle`; returns the log either way.
    pub fn log_containing(&self, needle: &str) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let text = fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
            if text.contains(needle) || Instant::now() >= deadline {
                return (text.contains(needle), text);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts sshd logged `needle`, printing the log otherwise.
    pub fn assert_logged(&self, needle: &str) {
        let (found, log) = self.log_containing(needle);
        assert!(found, "sshd log lacks {needle:?}:\n{log}");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
