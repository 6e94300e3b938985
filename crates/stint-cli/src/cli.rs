//! Command-line definitions and the client commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

use crate::client::{Client, parse_duration};

/// stint: session-bound access for non-human identities.
#[derive(Parser)]
#[command(name = "stint", version, about)]
pub struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "STINT_ADDR",
        default_value = "http://127.0.0.1:8300"
    )]
    addr: String,
    /// API key.
    #[arg(long, global = true, env = "STINT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Command,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("json", &self.json)
            .field("cmd", &self.cmd)
            .finish()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (SQLite in ./stint-data by default).
    Server {
        /// Address to bind; `127.0.0.1:0` picks a free port.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a new random API key (e.g. for STINT_BOOTSTRAP_ADMIN_KEY).
    Keygen,
    /// Manage principals (admin).
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// Manage targets.
    #[command(subcommand)]
    Target(TargetCmd),
    /// Request a session.
    Request(RequestArgs),
    /// Approve a session.
    Approve {
        /// Session id.
        id: String,
        /// Comment.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a session.
    Deny {
        /// Session id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// List sessions.
    Sessions {
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Show one session.
    Show {
        /// Session id.
        id: String,
    },
    /// Fetch a credential for an active session.
    Creds {
        /// Session id.
        id: String,
        /// Print only the access token.
        #[arg(long)]
        token_only: bool,
        /// OpenSSH public key file (ssh targets); prints the certificate.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Step-up nonce from `stint challenge` (break-glass sessions).
        #[arg(long)]
        nonce: Option<String>,
    },
    /// A fresh step-up nonce for the next credential of a break-glass session.
    Challenge {
        /// Session id.
        id: String,
    },
    /// Cedar policies (admin).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The break-glass review queue (approvers and admins).
    #[command(subcommand)]
    Review(ReviewCmd),
    /// Run the reconcile sweep now (admin): revoke what exists in targets but no live session owns.
    Reconcile,
    /// Workload trusts for token exchange (admin).
    #[command(subcommand)]
    Trust(DocCmd),
    /// Hook sources that end sessions when an activity closes (admin).
    #[command(subcommand)]
    HookSource(DocCmd),
    /// Exchange a workload's OIDC ID token for an access token (RFC 8693); prints the token.
    Exchange {
        /// The target's name.
        #[arg(long)]
        target: String,
        /// File holding the ID token (`-` for stdin); e.g. what a CI runner's OIDC endpoint returned.
        #[arg(long)]
        id_token_file: PathBuf,
    },
    /// Print the revocation stream live (resource servers and admins).
    Watch {
        /// Resume after this event id.
        #[arg(long)]
        after: Option<i64>,
    },
    /// SSH to a host with a certificate that lives exactly as long as the connection.
    Ssh(SshArgs),
    /// End a session (its credentials are revoked at once).
    End {
        /// Session id.
        id: String,
    },
    /// Cancel a requested or scheduled session.
    Cancel {
        /// Session id.
        id: String,
    },
    /// Reset a session's idle timer.
    Heartbeat {
        /// Session id.
        id: String,
    },
    /// Show a session's evidence (its audit events).
    Evidence {
        /// Session id.
        id: String,
    },
    /// The audit chain.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run a command with access that lives exactly as long as it does.
    Exec(ExecArgs),
}

#[derive(Debug, Subcommand)]
enum PrincipalCmd {
    /// Create a principal; prints its API key once.
    Create {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// service, ci_job, agent, vendor, workload, resource_server, approver or admin.
        #[arg(long)]
        kind: String,
        /// Group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List principals.
    List,
    /// Offboard a principal: its key dies and its sessions end.
    Delete {
        /// Principal id.
        id: String,
    },
    /// Replace a principal's API key.
    RotateKey {
        /// Principal id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum TargetCmd {
    /// Create a `jwt` target.
    Create {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Longest session, e.g. 1h.
        #[arg(long)]
        max_ttl: String,
        /// Longest token, e.g. 5m.
        #[arg(long)]
        token_ttl: Option<String>,
        /// Group whose members may request (repeatable).
        #[arg(long = "requester-group")]
        requester_groups: Vec<String>,
        /// Group whose members may approve (repeatable).
        #[arg(long = "approver-group")]
        approver_groups: Vec<String>,
        /// Approvals needed.
        #[arg(long, default_value_t = 0)]
        approvals: u32,
        /// Token audience (default: the name; jwt targets).
        #[arg(long)]
        audience: Option<String>,
        /// jwt, postgres or ssh.
        #[arg(long, default_value = "jwt")]
        kind: String,
        /// The kind's `config` as JSON (see docs/providers.md).
        #[arg(long, conflicts_with_all = ["config_file", "audience"])]
        config: Option<String>,
        /// Read `config` from a JSON file (keeps an admin URL out of the process list).
        #[arg(long, conflicts_with = "audience")]
        config_file: Option<PathBuf>,
    },
    /// List targets.
    List,
    /// Show one target (an ssh target shows its CA public key).
    Show {
        /// Name.
        name: String,
    },
    /// Delete a target (its sessions end).
    Delete {
        /// Name.
        name: String,
    },
    /// Download an ssh target's KRL (for sshd's RevokedKeys).
    Krl {
        /// Name.
        name: String,
        /// Write it here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Replace the policy set with a `.cedar` file (validated first; the old set stays on error).
    Put {
        /// The policy file.
        file: PathBuf,
    },
    /// Show the policy set in force (and the policies generated from target fields).
    Get,
    /// Print the Cedar schema policies are written against.
    Schema,
    /// What would happen to a request, and why — without creating anything.
    Check {
        /// Principal name.
        #[arg(long)]
        principal: String,
        /// Target name.
        #[arg(long)]
        target: String,
        /// Lifetime, e.g. 30m.
        #[arg(long)]
        ttl: String,
        /// Ask about break-glass.
        #[arg(long)]
        break_glass: bool,
        /// Binding as KIND:REF.
        #[arg(long)]
        binding: Option<String>,
        /// At this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Find configurations that make access session-bound in name only.
    Lint,
}

#[derive(Debug, Subcommand)]
enum ReviewCmd {
    /// Break-glass sessions waiting for review.
    List,
    /// Record a verdict on a break-glass session.
    Record {
        /// Session id.
        id: String,
        /// `justified` or `unjustified`.
        #[arg(long)]
        verdict: String,
        /// What you found.
        #[arg(long)]
        notes: String,
    },
}

/// Create or list a configuration document (trust, hook source).
#[derive(Debug, Subcommand)]
enum DocCmd {
    /// Create one from a JSON file (see docs/events.md); the file may hold a secret, so it is
    /// never echoed.
    Create {
        /// The JSON body.
        #[arg(long)]
        file: PathBuf,
    },
    /// List them.
    List,
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Verify the whole chain.
    Verify,
    /// List events.
    List {
        /// Events after this seq.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// What every session request names.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Target name.
    #[arg(long)]
    pub target: String,
    /// Lifetime, e.g. 15m.
    #[arg(long)]
    pub ttl: String,
    /// Why.
    #[arg(long)]
    pub reason: String,
    /// Binding as KIND:REF, e.g. ticket:OT-4711 (`stint exec` defaults to process:pid-<pid>@<host>).
    #[arg(long)]
    pub binding: Option<String>,
}

/// `stint request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// End after this long without heartbeat or use, e.g. 5m.
    #[arg(long)]
    pub idle: Option<String>,
    /// End after this many uses.
    #[arg(long)]
    pub max_uses: Option<u64>,
    /// Scheduled start (RFC 3339).
    #[arg(long)]
    pub not_before: Option<String>,
}

/// `stint exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Idle timeout; stint heartbeats at a third of it while the command runs.
    #[arg(long, default_value = "60s")]
    pub idle: String,
    /// How long to wait for approval before giving up, e.g. 10m (default: the approval window).
    #[arg(long)]
    pub wait: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `stint ssh`.
#[derive(Debug, Args)]
pub struct SshArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// How long to wait for approval before giving up, e.g. 10m (default: the approval window).
    #[arg(long)]
    pub wait: Option<String>,
    /// The `ssh` binary.
    #[arg(long, default_value = "ssh")]
    pub ssh: String,
    /// Arguments for ssh: the host (`user@host`) and options or a remote command.
    #[arg(last = true, required = true)]
    pub args: Vec<String>,
}

async fn policy_command(c: &Client, p: PolicyCmd, json_out: bool) -> anyhow::Result<()> {
    match p {
        PolicyCmd::Put { file } => {
            let source =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let resp = c.put("/v1/policies", json!({"source": source})).await;
            match resp {
                Ok(v) => println!(
                    "policies in force: {} (hash {})",
                    s(&v["policies"]),
                    s(&v["hash"])
                ),
                Err(e) => {
                    if let Some(f) = e.downcast_ref::<crate::client::ApiFailure>()
                        && let Some(errors) = &f.errors
                    {
                        for err in errors {
                            eprintln!(
                                "{}:{}:{}: {}",
                                file.display(),
                                s(&err["line"]),
                                s(&err["column"]),
                                s(&err["message"])
                            );
                        }
                    }
                    return Err(e);
                }
            }
        }
        PolicyCmd::Get => {
            let v = c.get("/v1/policies").await?;
            if json_out {
                print_json(&v);
            } else {
                println!(
                    "// hash {} ({} policies, from {})",
                    s(&v["hash"]),
                    s(&v["policies"]),
                    s(&v["origin"])
                );
                println!("{}", s(&v["source"]));
                println!("// generated from target fields:\n{}", s(&v["generated"]));
            }
        }
        PolicyCmd::Schema => println!("{}", s(&c.get("/v1/policies/schema").await?["schema"])),
        PolicyCmd::Check {
            principal,
            target,
            ttl,
            break_glass,
            binding,
            at,
        } => {
            let mut body = json!({"principal": principal, "target": target,
                "ttl_s": parse_duration(&ttl).context("--ttl")?, "break_glass": break_glass});
            if let Some(b) = binding {
                let (kind, r) = b.split_once(':').context("--binding must be KIND:REF")?;
                body["binding"] = json!({"kind": kind, "ref": r});
            }
            if let Some(a) = at {
                body["at"] = json!(a);
            }
            let v = c.post("/v1/policies/check", body).await?;
            if json_out {
                print_json(&v);
            } else {
                println!(
                    "{}: approvals required {}, eligible approvers [{}], decided by [{}]",
                    s(&v["decision"]),
                    s(&v["approvals_required"]),
                    v["eligible_approvers"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                    v["reasons"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                );
            }
        }
        PolicyCmd::Lint => {
            let v = c.get("/v1/policies/lint").await?;
            if json_out {
                print_json(&v);
            } else {
                let findings = v["findings"].as_array().cloned().unwrap_or_default();
                for f in &findings {
                    println!(
                        "[{}] {}: {}\n    fix: {}",
                        s(&f["severity"]),
                        s(&f["subject"]),
                        s(&f["message"]),
                        s(&f["fix"])
                    );
                }
                println!("{} finding(s)", findings.len());
            }
        }
    }
    Ok(())
}

async fn doc_command(c: &Client, path: &str, d: DocCmd, json: bool) -> anyhow::Result<()> {
    match d {
        DocCmd::Create { file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .map_err(|_| anyhow::anyhow!("{} must hold a JSON object", file.display()))?;
            let v = c.post(path, body).await?;
            if json {
                print_json(&v);
            } else {
                println!("{} created", s(&v["name"]));
            }
        }
        DocCmd::List => {
            let v = c.get(path).await?;
            print_list(
                &v,
                json,
                &[
                    ("name", &field("name")),
                    ("kind", &field("kind")),
                    ("issuer", &field("issuer")),
                ],
            );
        }
    }
    Ok(())
}

/// Builds the JSON body of a session request.
pub fn request_body(
    session: &SessionArgs,
    binding: Option<&str>,
    idle: Option<&str>,
    max_uses: Option<u64>,
    not_before: Option<&str>,
) -> anyhow::Result<Value> {
    let mut body = json!({
        "target": session.target,
        "ttl_s": parse_duration(&session.ttl).context("--ttl")?,
        "reason": session.reason,
    });
    if let Some(b) = binding.or(session.binding.as_deref()) {
        let (kind, r) = b
            .split_once(':')
            .context("--binding must be KIND:REF, e.g. ticket:OT-4711")?;
        body["binding"] = json!({"kind": kind, "ref": r});
    }
    if let Some(i) = idle {
        body["idle_timeout_s"] = json!(parse_duration(i).context("--idle")?);
    }
    if let Some(m) = max_uses {
        body["max_uses"] = json!(m);
    }
    if let Some(nb) = not_before {
        body["not_before"] = json!(nb);
    }
    Ok(body)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints a list answer (`{"items": [...]}`) as JSON or as a table of the given `(header, field)`
/// columns; a field may be a function of the item for computed columns.
/// A table column: its header and how to show an item in it.
type Column<'a> = (&'a str, &'a dyn Fn(&Value) -> String);

fn print_list(v: &Value, as_json: bool, columns: &[Column<'_>]) {
    if as_json {
        print_json(v);
        return;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(columns.iter().map(|(h, _)| *h).collect::<Vec<_>>());
    for item in v["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
        t.add_row(columns.iter().map(|(_, f)| f(item)).collect::<Vec<_>>());
    }
    println!("{t}");
}

/// A column showing one field.
fn field(name: &'static str) -> impl Fn(&Value) -> String {
    move |v| s(&v[name])
}

fn print_session(v: &Value, as_json: bool) {
    if as_json {
        print_json(v);
        return;
    }
    println!("session   {}", s(&v["id"]));
    println!("state     {}", s(&v["state"]));
    println!("target    {}", s(&v["target"]));
    println!("principal {}", s(&v["principal"]));
    println!("reason    {}", s(&v["reason"]));
    println!("expires   {}", s(&v["expires_at"]));
    if !v["end_reason"].is_null() {
        println!("ended     {} ({})", s(&v["ended_at"]), s(&v["end_reason"]));
    }
    let approvals = v["approvals"].as_array().map_or(0, Vec::len);
    println!("approvals {approvals}/{}", s(&v["approvals_required"]));
}

/// Runs a parsed command.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = || Client::new(&cli.addr, cli.token.clone());
    match cli.cmd {
        Command::Server {
            listen,
            data_dir,
            config,
        } => {
            stint_server::run(stint_server::RunOptions {
                config,
                overrides: stint_server::Overrides { listen, data_dir },
            })
            .await?;
        }
        Command::Keygen => println!("{}", stint_server::new_api_key()?),
        Command::Principal(p) => {
            let c = client()?;
            match p {
                PrincipalCmd::Create { name, kind, groups } => {
                    let v = c
                        .post(
                            "/v1/principals",
                            json!({"name": name, "kind": kind, "groups": groups}),
                        )
                        .await?;
                    if cli.json {
                        print_json(&v);
                    } else {
                        println!(
                            "principal {} ({}) created: {}",
                            s(&v["name"]),
                            s(&v["kind"]),
                            s(&v["id"])
                        );
                        println!("API key (shown once, store it now): {}", s(&v["api_key"]));
                    }
                }
                PrincipalCmd::List => {
                    let v = c.get("/v1/principals?limit=1000").await?;
                    let groups = |p: &Value| {
                        p["groups"]
                            .as_array()
                            .map(|g| g.iter().map(s).collect::<Vec<_>>().join(","))
                            .unwrap_or_default()
                    };
                    let status = |p: &Value| {
                        if p["deleted_at"].is_null() {
                            "active"
                        } else {
                            "offboarded"
                        }
                        .to_owned()
                    };
                    print_list(
                        &v,
                        cli.json,
                        &[
                            ("id", &field("id")),
                            ("name", &field("name")),
                            ("kind", &field("kind")),
                            ("groups", &groups),
                            ("status", &status),
                        ],
                    );
                }
                PrincipalCmd::Delete { id } => {
                    let v = c.delete(&format!("/v1/principals/{id}")).await?;
                    if cli.json {
                        print_json(&v)
                    } else {
                        println!("principal {} offboarded", s(&v["id"]))
                    }
                }
                PrincipalCmd::RotateKey { id } => {
                    let v = c
                        .post(&format!("/v1/principals/{id}/rotate-key"), json!({}))
                        .await?;
                    if cli.json {
                        print_json(&v)
                    } else {
                        println!("new API key (shown once): {}", s(&v["api_key"]))
                    }
                }
            }
        }
        Command::Target(t) => {
            let c = client()?;
            match t {
                TargetCmd::Create {
                    name,
                    max_ttl,
                    token_ttl,
                    requester_groups,
                    approver_groups,
                    approvals,
                    audience,
                    kind,
                    config,
                    config_file,
                } => {
                    let mut body = json!({
                        "name": name, "kind": kind,
                        "max_ttl_s": parse_duration(&max_ttl).context("--max-ttl")?,
                        "requester_groups": requester_groups, "approver_groups": approver_groups,
                        "approvals_required": approvals,
                    });
                    if let Some(tt) = token_ttl {
                        body["token_ttl_s"] = json!(parse_duration(&tt).context("--token-ttl")?);
                    }
                    if let Some(a) = audience {
                        body["config"] = json!({"audience": a});
                    }
                    let config_text = match (config, config_file) {
                        (Some(t), _) => Some(t),
                        (None, Some(p)) => Some(
                            std::fs::read_to_string(&p)
                                .with_context(|| format!("reading {}", p.display()))?,
                        ),
                        (None, None) => None,
                    };
                    if let Some(t) = config_text {
                        // Never echo the text: it may hold an admin URL.
                        body["config"] = serde_json::from_str(&t)
                            .map_err(|_| anyhow::anyhow!("--config/--config-file must hold a JSON object"))?;
                    }
                    let v = c.post("/v1/targets", body).await?;
                    if cli.json {
                        print_json(&v)
                    } else {
                        println!("target {} created", s(&v["name"]))
                    }
                }
                TargetCmd::Show { name } => print_json(&c.get(&format!("/v1/targets/{name}")).await?),
                TargetCmd::Delete { name } => {
                    c.delete(&format!("/v1/targets/{name}")).await?;
                    if !cli.json {
                        println!("target {name} deleted");
                    }
                }
                TargetCmd::Krl { name, out } => {
                    let bytes = c.get_bytes(&format!("/v1/targets/{name}/krl")).await?;
                    match out {
                        Some(p) => {
                            std::fs::write(&p, &bytes).with_context(|| format!("writing {}", p.display()))?
                        }
                        None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
                    }
                }
                TargetCmd::List => {
                    let v = c.get("/v1/targets?limit=1000").await?;
                    print_list(
                        &v,
                        cli.json,
                        &[
                            ("name", &field("name")),
                            ("kind", &field("kind")),
                            ("max_ttl_s", &field("max_ttl_s")),
                            ("token_ttl_s", &field("token_ttl_s")),
                            ("approvals", &field("approvals_required")),
                        ],
                    );
                }
            }
        }
        Command::Request(r) => {
            let body = request_body(
                &r.session,
                None,
                r.idle.as_deref(),
                r.max_uses,
                r.not_before.as_deref(),
            )?;
            let v = client()?.post("/v1/sessions", body).await?;
            print_session(&v, cli.json);
        }
        Command::Approve { id, comment } => {
            let v = client()?
                .post(&format!("/v1/sessions/{id}/approve"), json!({"comment": comment}))
                .await?;
            print_session(&v, cli.json);
        }
        Command::Deny { id, reason } => {
            let v = client()?
                .post(&format!("/v1/sessions/{id}/deny"), json!({"reason": reason}))
                .await?;
            print_session(&v, cli.json);
        }
        Command::Sessions { state, target } => {
            let mut q = vec!["limit=1000".to_owned()];
            if let Some(st) = state {
                q.push(format!("state={st}"));
            }
            if let Some(t) = target {
                q.push(format!("target={t}"));
            }
            let v = client()?.get(&format!("/v1/sessions?{}", q.join("&"))).await?;
            print_list(
                &v,
                cli.json,
                &[
                    ("id", &field("id")),
                    ("state", &field("state")),
                    ("target", &field("target")),
                    ("principal", &field("principal")),
                    ("expires_at", &field("expires_at")),
                    ("end_reason", &field("end_reason")),
                    ("reason", &field("reason")),
                ],
            );
        }
        Command::Show { id } => {
            let v = client()?.get(&format!("/v1/sessions/{id}")).await?;
            print_session(&v, cli.json);
        }
        Command::Creds {
            id,
            token_only,
            public_key,
            nonce,
        } => {
            let mut body = match public_key {
                Some(p) => json!({"public_key": std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .trim()}),
                None => json!({}),
            };
            if let Some(n) = nonce {
                body["nonce"] = json!(n);
            }
            let v = client()?
                .post(&format!("/v1/sessions/{id}/credentials"), body)
                .await?;
            if token_only {
                println!("{}", s(&v["access_token"]))
            } else if v["kind"] == "ssh" && !cli.json {
                println!("{}", s(&v["certificate"]))
            } else {
                print_json(&v)
            }
        }
        Command::Reconcile => {
            let v = client()?.post("/v1/reconcile", json!({})).await?;
            if cli.json {
                print_json(&v);
            } else {
                let zombies = v["zombies"].as_array().cloned().unwrap_or_default();
                for z in &zombies {
                    println!(
                        "{}\t{}\t{}",
                        s(&z["target"]),
                        s(&z["credential"]),
                        s(&z["action"])
                    );
                }
                println!(
                    "{} zombie(s); {} revocation(s) outstanding",
                    zombies.len(),
                    s(&v["outstanding_revocations"])
                );
            }
        }
        Command::Ssh(a) => return crate::ssh::run(client()?, a).await,
        Command::Challenge { id } => {
            let v = client()?
                .post(&format!("/v1/sessions/{id}/challenge"), json!({}))
                .await?;
            if cli.json {
                print_json(&v);
            } else {
                println!("{}", s(&v["nonce"]));
            }
        }
        Command::Policy(p) => policy_command(&client()?, p, cli.json).await?,
        Command::Review(r) => {
            let c = client()?;
            match r {
                ReviewCmd::List => {
                    let v = c.get("/v1/reviews").await?;
                    print_list(
                        &v,
                        cli.json,
                        &[
                            ("id", &field("id")),
                            ("target", &field("target")),
                            ("principal", &field("principal")),
                            ("state", &field("state")),
                            ("reason", &field("reason")),
                        ],
                    );
                }
                ReviewCmd::Record { id, verdict, notes } => {
                    let v = c
                        .post(
                            &format!("/v1/sessions/{id}/review"),
                            json!({"verdict": verdict, "notes": notes}),
                        )
                        .await?;
                    if cli.json {
                        print_json(&v);
                    } else {
                        println!("review of {id} recorded: {}", s(&v["verdict"]));
                    }
                }
            }
        }
        Command::Trust(d) => doc_command(&client()?, "/v1/trusts", d, cli.json).await?,
        Command::HookSource(d) => doc_command(&client()?, "/v1/hook-sources", d, cli.json).await?,
        Command::Exchange {
            target,
            id_token_file,
        } => {
            let token = if id_token_file.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                t
            } else {
                std::fs::read_to_string(&id_token_file)
                    .with_context(|| format!("reading {}", id_token_file.display()))?
            };
            let v = client()?.exchange(token.trim(), &target).await?;
            if cli.json {
                print_json(&v);
            } else {
                println!("{}", s(&v["access_token"]));
            }
        }
        Command::Watch { after } => client()?.watch(after, cli.json).await?,
        Command::End { id } => {
            let v = client()?
                .post(&format!("/v1/sessions/{id}/end"), json!({}))
                .await?;
            print_session(&v, cli.json);
        }
        Command::Cancel { id } => {
            let v = client()?
                .post(&format!("/v1/sessions/{id}/cancel"), json!({}))
                .await?;
            print_session(&v, cli.json);
        }
        Command::Heartbeat { id } => {
            client()?
                .post(&format!("/v1/sessions/{id}/heartbeat"), json!({}))
                .await?;
        }
        Command::Evidence { id } => print_json(&client()?.get(&format!("/v1/sessions/{id}/evidence")).await?),
        Command::Audit(a) => {
            let c = client()?;
            match a {
                AuditCmd::Verify => {
                    let v = c.get("/v1/audit/verify").await?;
                    if cli.json {
                        print_json(&v);
                    } else if v["ok"].as_bool() == Some(true) {
                        println!(
                            "audit chain OK: {} events, head {}",
                            s(&v["events"]),
                            s(&v["head_hash"])
                        );
                    } else {
                        println!(
                            "audit chain BROKEN at seq {}: {}",
                            s(&v["first_bad_seq"]),
                            s(&v["problem"])
                        );
                    }
                    if v["ok"].as_bool() != Some(true) {
                        return Ok(ExitCode::from(2));
                    }
                }
                AuditCmd::List { after, limit } => print_json(
                    &c.get(&format!("/v1/audit?after_seq={after}&limit={limit}"))
                        .await?,
                ),
            }
        }
        Command::Exec(e) => return crate::exec::run(client()?, e).await,
    }
    Ok(ExitCode::SUCCESS)
}
