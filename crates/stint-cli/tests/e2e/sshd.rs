//! A real OpenSSH `sshd` for end-to-end tests: trusts one user CA, reads one KRL, listens on a free
//! 127.0.0.1 port, and is killed on drop. Needs root (logins are as `root`), `/usr/bin/ssh` and
//! `/usr/bin/ssh-keygen`; the sshd binary comes from `STINT_TEST_SSHD`.
//!
//! Everything here blocks (bounded by timeouts); async tests may call it directly, since the server under
//! test runs in its own process.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Seek};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The sshd binary named by `STINT_TEST_SSHD` (e.g. `/usr/sbin/sshd`).
///
/// `None` means the caller should skip (a one-line reason is printed); with `CI=true` a missing
/// `STINT_TEST_SSHD` panics instead, so CI cannot silently skip sshd tests.
pub fn sshd_bin() -> Option<String> {
    match std::env::var("STINT_TEST_SSHD") {
        Ok(bin) if !bin.is_empty() => {
            assert!(
                Path::new(&bin).is_absolute(),
                "STINT_TEST_SSHD must be an absolute path, got {bin}"
            );
            assert!(Path::new(&bin).is_file(), "STINT_TEST_SSHD={bin} does not exist");
            assert!(Path::new(SSH).is_file(), "{SSH} is needed for sshd tests");
            assert!(
                Path::new(SSH_KEYGEN).is_file(),
                "{SSH_KEYGEN} is needed for sshd tests"
            );
            Some(bin)
        }
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "CI=true but STINT_TEST_SSHD is not set (e.g. STINT_TEST_SSHD=/usr/sbin/sshd)"
            );
            eprintln!("skipping: STINT_TEST_SSHD is not set (e.g. STINT_TEST_SSHD=/usr/sbin/sshd)");
            None
        }
    }
}

/// Generates an unencrypted Ed25519 key `dir/name` with ssh-keygen; returns the private key path and the
/// public key line.
pub fn keygen_ed25519(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = run(Command::new(SSH_KEYGEN)
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            &format!("{name}@stint-e2e"),
            "-f",
        ])
        .arg(&path));
    assert!(out.status.success(), "ssh-keygen failed: {}", out.stderr);
    let public = fs::read_to_string(path.with_extension("pub")).expect("read public key");
    (path, public.trim().to_owned())
}

/// A running sshd.
pub struct Sshd {
    /// The 127.0.0.1 port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Sshd {
    /// Starts `sshd_bin` trusting `trusted_ca_pub` (a public key line) and reading revocations from
    /// `krl_path` (which must exist; an empty KRL is fine). Panics with sshd's output on failure.
    pub fn start(sshd_bin: &str, trusted_ca_pub: &str, krl_path: &Path) -> Sshd {
        // Privilege separation needs it; /run is a tmpfs, so it is often missing in containers.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (sshd tests must run as root)");
        let dir = tempfile::tempdir().expect("tempdir");
        let (host_key, _) = keygen_ed25519(dir.path(), "host_key");
        let ca = dir.path().join("user_ca.pub");
        fs::write(&ca, format!("{}\n", trusted_ca_pub.trim())).expect("write CA key");
        let log = dir.path().join("sshd.log");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("find a free port")
                .port();
            let config = dir.path().join("sshd_config");
            fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nTrustedUserCAKeys {}\nRevokedKeys {}\n\
                     AuthorizedKeysFile none\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nStrictModes no\nPidFile {}\nUsePAM no\nLogLevel VERBOSE\n",
                    host_key.display(),
                    ca.display(),
                    krl_path.display(),
                    dir.path().join("sshd.pid").display(),
                ),
            )
            .expect("write sshd_config");
            let mut child = Command::new(sshd_bin)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("create sshd log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {sshd_bin}: {e}"));
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Server listening on") {
                    return Sshd { port, dir, child };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    if text.contains("Address already in use") {
                        break; // lost the race for the port: try another
                    }
                    panic!("sshd exited ({status}) before listening:\n{text}");
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("sshd did not listen within {START_TIMEOUT:?}:\n{text}");
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("sshd could not bind a free port in 5 attempts");
    }

    /// Runs `command` on the host as `user`, authenticating with `key` and its certificate `cert`.
    pub fn login(&self, user: &str, key: &Path, cert: &Path, command: &str) -> RunOutput {
        run(Command::new(SSH)
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
            ])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
            ])
            .args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-i"])
            .arg(key)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command))
    }

    /// Whether `user` can log in with `key` + `cert` and run `true`.
    pub fn try_login(&self, user: &str, key: &Path, cert: &Path) -> bool {
        self.login(user, key, cert, "true").status.success()
    }

    /// sshd's log so far (LogLevel VERBOSE: accepted/refused logins with key id and serial).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished command returned.
#[derive(Debug)]
pub struct RunOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion within [`COMMAND_TIMEOUT`], or kills it and panics.
fn run(cmd: &mut Command) -> RunOutput {
    // Temp files rather than pipes, so nothing blocks on a full pipe while we poll.
    let mut out = tempfile::tempfile().expect("tempfile");
    let mut err = tempfile::tempfile().expect("tempfile");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {COMMAND_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let read = |file: &mut File| {
        let mut text = String::new();
        file.rewind().expect("rewind");
        file.read_to_string(&mut text).expect("read output");
        text
    };
    RunOutput {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}
