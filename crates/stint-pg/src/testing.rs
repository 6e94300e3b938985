//! Test helpers (feature `testing`): the shared PostgreSQL server of the test environment, unique role
//! prefixes, and private throwaway clusters whose passwords are really checked.
//!
//! Without the environment variables the helpers print why and return `None`, so the caller skips;
//! under `CI=true` a missing variable panics instead, so CI cannot pass by skipping.
//!
//! These helpers panic on failure: they only run in tests.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::scram::{SCRAM_ITERATIONS, random_bytes, scram_sha256_verifier};

/// The variable holding the shared server's admin URL.
pub const SHARED_URL_VAR: &str = "STINT_TEST_POSTGRES_URL";
/// The variable holding the directory of PostgreSQL's binaries (`initdb`, `pg_ctl`, `psql`).
pub const BINDIR_VAR: &str = "STINT_TEST_PG_BINDIR";

/// The OS user that owns and runs private clusters when the tests run as root.
const PG_OS_USER: &str = "postgres";
/// Bound on `initdb`.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on `pg_ctl start`/`stop` and `psql` (pg_ctl gets a slightly shorter `-t` of its own).
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared server's admin URL from `STINT_TEST_POSTGRES_URL` (e.g.
/// `postgres://root@127.0.0.1:5432/postgres`), or `None` after printing why the caller skips.
///
/// # Panics
///
/// If the variable is missing and `CI=true`.
pub fn shared_url() -> Option<String> {
    match std::env::var(SHARED_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(&format!("{SHARED_URL_VAR} is not set"));
            None
        }
    }
}

/// A role-name prefix no other test run uses, `stint_t<8 hex>_`, so tests in parallel on one shared
/// server never touch each other's roles.
pub fn unique_prefix() -> String {
    format!("stint_t{}_", hex(&random_bytes::<4>()))
}

/// A private PostgreSQL cluster in a temporary directory, for tests that need password
/// authentication (`scram-sha-256` on `127.0.0.1`) or need to stop the server.
///
/// It logs every statement (`log_statement = 'all'`) to [`PrivateCluster::server_log`]. Dropping it
/// stops the server (immediate mode) and removes the directory.
pub struct PrivateCluster {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    bindir: PathBuf,
    password: String,
    as_root: bool,
    running: AtomicBool,
    commands: AtomicU32,
}

impl fmt::Debug for PrivateCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateCluster")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.running.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl PrivateCluster {
    /// Creates and starts a cluster with binaries from `STINT_TEST_PG_BINDIR` (e.g.
    /// `/usr/lib/postgresql/15/bin`), or returns `None` after printing why the caller skips.
    ///
    /// `pg_hba.conf` is `local all all trust` and `host all all 127.0.0.1/32 scram-sha-256`; the
    /// superuser `postgres` gets a random password (set over the Unix socket in the temporary
    /// directory) for [`PrivateCluster::admin_url`]. Run as root, the cluster belongs to the OS user
    /// `postgres` and its commands run through `runuser`.
    ///
    /// # Panics
    ///
    /// If the variable is missing and `CI=true`, or if the cluster cannot be created or started.
    pub fn start() -> Option<PrivateCluster> {
        let bindir = match std::env::var(BINDIR_VAR) {
            Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                skip(&format!("{BINDIR_VAR} is not set"));
                return None;
            }
        };
        assert!(
            bindir.join("initdb").exists(),
            "{BINDIR_VAR}={} has no initdb",
            bindir.display()
        );
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("stint-pg-")
            .tempdir()
            .expect("create a temp dir");
        if as_root {
            let status = Command::new("chown")
                .arg(format!("{PG_OS_USER}:"))
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown {PG_OS_USER} {} failed",
                dir.path().display()
            );
        }
        let cluster = PrivateCluster {
            port: free_port(),
            dir,
            bindir,
            password: hex(&random_bytes::<16>()),
            as_root,
            running: AtomicBool::new(false),
            commands: AtomicU32::new(0),
        };
        cluster.initdb();
        cluster.restart();
        cluster.set_superuser_password();
        Some(cluster)
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as if the target became unreachable.
    /// Does nothing if it is stopped.
    ///
    /// # Panics
    ///
    /// If `pg_ctl` fails.
    pub fn stop(&self) {
        if self.running.swap(false, Ordering::SeqCst) {
            self.ctl(&["stop", "-m", "immediate"]).expect("pg_ctl stop");
        }
    }

    /// Starts the server again, on the same port and data directory. Does nothing if it runs.
    ///
    /// # Panics
    ///
    /// If `pg_ctl` fails or the server is not up within a minute.
    pub fn restart(&self) {
        if !self.running.load(Ordering::SeqCst) {
            let log = self.log_path();
            let log = log.to_str().expect("a UTF-8 temp path");
            if let Err(e) = self.ctl(&["start", "-l", log]) {
                panic!("pg_ctl start: {e}\nserver log:\n{}", self.server_log());
            }
            self.running.store(true, Ordering::SeqCst);
        }
    }

    /// Everything the server has logged, every statement included.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn initdb(&self) {
        let data = self.data_dir();
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        if let Err(e) = self.run(cmd, INITDB_TIMEOUT) {
            panic!("initdb: {e}");
        }
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        let conf = format!(
            "\n# stint-pg test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             password_encryption = 'scram-sha-256'\n\
             log_statement = 'all'\n\
             max_connections = 40\n\
             shared_buffers = '16MB'\n\
             fsync = off\n\
             full_page_writes = off\n",
            port = self.port,
            socket = self.dir.path().display(),
        );
        OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");
    }

    fn set_superuser_password(&self) {
        // The verifier rather than the plaintext, which would land in the statement log.
        let verifier = scram_sha256_verifier(&self.password, &random_bytes::<16>(), SCRAM_ITERATIONS);
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("ALTER ROLE postgres PASSWORD '{verifier}'"));
        if let Err(e) = self.run(cmd, CTL_TIMEOUT) {
            panic!("set the superuser password: {e}");
        }
    }

    fn ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "50"])
            .args(args);
        self.run(cmd, CTL_TIMEOUT)
    }

    /// A PostgreSQL program, run as the cluster's owner.
    fn pg_command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", PG_OS_USER, "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// Runs `cmd` in the cluster directory with its output in a file, killing it after `limit`.
    fn run(&self, mut cmd: Command, limit: Duration) -> Result<(), String> {
        let n = self.commands.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.path().join(format!("command-{n}.out"));
        let out = File::create(&out_path).map_err(|e| format!("create {}: {e}", out_path.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // A file rather than a pipe: a server started by pg_ctl inherits it and never closes it.
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let shown = format!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|e| format!("{shown}: {e}"))?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{shown} did not finish within {limit:?}"));
                }
                Err(e) => return Err(format!("{shown}: {e}")),
            }
        };
        if status.success() {
            Ok(())
        } else {
            let output = fs::read_to_string(&out_path).unwrap_or_default();
            Err(format!("{shown} failed with {status}:\n{output}"))
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running.swap(false, Ordering::SeqCst)
            && let Err(e) = self.ctl(&["stop", "-m", "immediate"])
        {
            eprintln!("stopping the private cluster on port {}: {e}", self.port);
        }
        // The TempDir removes the directory after this.
    }
}

/// Prints why a test skips, or panics under `CI=true`.
fn skip(reason: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    assert!(!ci, "{reason}, and CI=true: the PostgreSQL tests must run in CI");
    eprintln!("skipping a PostgreSQL test: {reason}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
