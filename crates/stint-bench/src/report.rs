//! `stint-bench report`: the side-by-side markdown table from `--json` files, a pure function of their
//! text ([`markdown`]).
//!
//! Each file is one system's figures (several files may hold the same system: they are merged). A
//! system's column is named by the file's `label` (`--label`), else its `system`. The first stint column
//! is the baseline: for every other column a ratio column `stint/<name>` divides stint's figure by that
//! system's (throughputs: above 1 means stint is faster; rows measured as a time say so and read the
//! other way). A cell shows throughput, p50/p99 latency and the client's CPU; `CLIENT-BOUND` marks a
//! run where the client took over a quarter of the machine (the figure may be the client's limit).
//! Top-level arrays this module does not know (newer scenarios) are listed field by field.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

/// `stint-bench report`: the table of `--json` files on stdout, and optionally into a markdown file.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// `--json` files written by `stint-bench` (and `stint-bench ready --json`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also put the table into this markdown file between `<!-- compare:begin -->` and
    /// `<!-- compare:end -->` (added before its first `## ` section if missing), under `--title`.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// The heading of the block written with `--write`.
    #[arg(long, default_value = "stint-bench comparison")]
    pub title: String,
    /// A line written under the heading (repeatable), e.g. the sizes used.
    #[arg(long)]
    pub note: Vec<String>,
}

/// Runs `stint-bench report`.
pub fn command(args: &ReportArgs) -> anyhow::Result<()> {
    let mut texts = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        texts.push((path.display().to_string(), text));
    }
    let table = markdown(&texts)?;
    print!("{table}");
    if let Some(path) = &args.write {
        let doc = match std::fs::read_to_string(path) {
            Ok(doc) => doc,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let doc = splice(&doc, &block(&args.title, &args.note, &table));
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A `--json` file that could not be read as one.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not JSON, or not a `stint-bench` report.
    #[error("`{file}` is not a stint-bench JSON report: {source}")]
    Json {
        /// The file's name.
        file: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// No file held any figure.
    #[error("no figures in the files given")]
    Empty,
}

/// The keys [`Input`] reads; any other top-level array is shown field by field.
const KNOWN_KEYS: &[&str] = &[
    "tool",
    "version",
    "label",
    "runs",
    "pg_roles",
    "expiry",
    "scale",
    "system",
    "url",
    "path",
    "ready_s",
    "first_answer_s",
    "polls",
];

#[derive(Debug, Deserialize)]
struct Input {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    runs: Vec<Run>,
    #[serde(default)]
    pg_roles: Vec<PgRoles>,
    #[serde(default)]
    expiry: Vec<Expiry>,
    #[serde(default)]
    scale: Vec<Scale>,
    /// `stint-bench ready --json`: a server's time to ready (its `system` names the column).
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    ready_s: Option<f64>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// A bulk phase of `mass-expiry` or `scale`.
#[derive(Debug, Deserialize)]
struct Bulk {
    #[serde(default)]
    requested: usize,
    ok: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    elapsed_s: f64,
    per_s: f64,
    latency: Latency,
    #[serde(default)]
    stopped: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Lag {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Deserialize)]
struct Expiry {
    system: String,
    created: usize,
    create: Bulk,
    #[serde(default)]
    samples: usize,
    #[serde(default)]
    inactive_lag: Option<Lag>,
    #[serde(default)]
    accepted_after_deadline: u64,
    #[serde(default)]
    never_inactive: usize,
    #[serde(default)]
    all_revoked_s: Option<f64>,
    #[serde(default)]
    max_uncleared: Option<u64>,
    /// OpenBao: the same tokens checked by presenting themselves (`lookup-self`).
    #[serde(default)]
    lookup_self: Option<Watch>,
}

#[derive(Debug, Deserialize)]
struct Watch {
    #[serde(default)]
    samples: usize,
    #[serde(default)]
    inactive_lag: Option<Lag>,
    #[serde(default)]
    accepted_after_deadline: u64,
}

#[derive(Debug, Deserialize)]
struct Rss {
    before_kib: u64,
    after_kib: u64,
}

#[derive(Debug, Deserialize)]
struct Scale {
    system: String,
    requested: usize,
    create: Bulk,
    #[serde(default)]
    with_credentials: bool,
    #[serde(default)]
    rss: Option<Rss>,
    #[serde(default)]
    rss_per_item_bytes: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Run {
    system: String,
    scenario: String,
    concurrency: usize,
    #[serde(default)]
    errors: u64,
    ops_per_s: f64,
    latency: Latency,
    #[serde(default)]
    client_cpu: Option<Cpu>,
    #[serde(default)]
    aborted: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Deserialize)]
struct Cpu {
    machine_fraction: f64,
    client_bound: bool,
}

#[derive(Debug, Deserialize)]
struct Phase {
    ops: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    elapsed_s: f64,
    ops_per_s: f64,
    latency: Latency,
    #[serde(default)]
    client_cpu: Option<Cpu>,
    #[serde(default)]
    aborted: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PgRoles {
    system: String,
    concurrency: usize,
    requested: usize,
    issue: Phase,
    revoke: Phase,
    #[serde(default)]
    all_confirmed_s: Option<f64>,
    revoked_per_s: f64,
    #[serde(default)]
    unconfirmed: usize,
    #[serde(default)]
    roles_left: Option<usize>,
    #[serde(default)]
    logins: Logins,
    #[serde(default)]
    pg_host_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Logins {
    #[serde(default)]
    before_tried: usize,
    #[serde(default)]
    before_ok: usize,
    #[serde(default)]
    after_tried: usize,
    #[serde(default)]
    after_refused: usize,
}

/// One table cell: its text and the figure ratios are taken of.
#[derive(Debug, Clone)]
struct Cell {
    text: String,
    value: Option<f64>,
}

/// One table row: a name and a cell per column.
#[derive(Debug)]
struct Row {
    name: String,
    cells: BTreeMap<usize, Cell>,
}

/// The table being built: columns in order of first appearance, rows likewise.
#[derive(Debug, Default)]
struct Table {
    columns: Vec<Column>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

#[derive(Debug)]
struct Column {
    name: String,
    stint: bool,
}

impl Table {
    fn column(&mut self, name: &str, system: &str) -> usize {
        if let Some(i) = self.columns.iter().position(|c| c.name == name) {
            self.columns[i].stint |= system == "stint";
            return i;
        }
        self.columns.push(Column {
            name: name.to_owned(),
            stint: system == "stint",
        });
        self.columns.len() - 1
    }

    /// Puts `cell` into `row`, adding the row after the last one of its section (the name up to `: `)
    /// if it is new, else at the end.
    fn put(&mut self, row: String, column: usize, cell: Cell) {
        let index = match self.rows.iter().position(|r| r.name == row) {
            Some(i) => i,
            None => {
                let at = section(&row)
                    .and_then(|s| self.rows.iter().rposition(|r| section(&r.name) == Some(s)))
                    .map_or(self.rows.len(), |i| i + 1);
                let new = Row {
                    name: row,
                    cells: BTreeMap::new(),
                };
                self.rows.insert(at, new);
                at
            }
        };
        self.rows[index].cells.insert(column, cell);
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

/// The part of a row name before `: `, if it has one (`mass-expiry: …` → `mass-expiry`).
fn section(row: &str) -> Option<&str> {
    row.split_once(": ").map(|(s, _)| s)
}

/// The markdown table for `files` (name and text of each `--json` file), one column per system and a
/// ratio column per system against stint.
pub fn markdown(files: &[(String, String)]) -> Result<String, ReportError> {
    let mut table = Table::default();
    for (file, text) in files {
        let input: Input = serde_json::from_str(text).map_err(|source| ReportError::Json {
            file: file.clone(),
            source,
        })?;
        add_input(&mut table, file, &input);
    }
    if table.rows.is_empty() {
        return Err(ReportError::Empty);
    }
    Ok(render(&table))
}

/// The marker lines a generated block sits between in a markdown file.
pub const BEGIN: &str = "<!-- compare:begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- compare:end -->";

/// The block written into a markdown file: markers, a `## title` heading, the notes as one paragraph,
/// then the table.
pub fn block(title: &str, notes: &[String], table: &str) -> String {
    let mut out = format!("{BEGIN}\n## {title}\n\n");
    if !notes.is_empty() {
        out.push_str(&notes.join("\n\n"));
        out.push_str("\n\n");
    }
    out.push_str(table);
    if !table.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// `doc` with `block` in place of whatever stood between [`BEGIN`] and [`END`] (markers included); without
/// both markers, `block` goes before the first `## ` heading (or at the end). Nothing else changes.
pub fn splice(doc: &str, block: &str) -> String {
    if let Some(begin) = doc.find(BEGIN)
        && let Some(end) = doc[begin..].find(END).map(|e| begin + e + END.len())
    {
        let end = if doc[end..].starts_with('\n') {
            end + 1
        } else {
            end
        };
        return format!("{}{block}{}", &doc[..begin], &doc[end..]);
    }
    let heading = doc
        .match_indices("\n## ")
        .next()
        .map(|(i, _)| i + 1)
        .or_else(|| doc.starts_with("## ").then_some(0));
    match heading {
        Some(at) => format!("{}{block}\n{}", &doc[..at], &doc[at..]),
        None if doc.is_empty() => block.to_owned(),
        None if doc.ends_with("\n\n") => format!("{doc}{block}"),
        None if doc.ends_with('\n') => format!("{doc}\n{block}"),
        None => format!("{doc}\n\n{block}"),
    }
}

fn add_input(table: &mut Table, file: &str, input: &Input) {
    let name = |system: &str| input.label.clone().unwrap_or_else(|| system.to_owned());
    for run in &input.runs {
        let column = table.column(&name(&run.system), &run.system);
        let mut text = rate_cell(run.ops_per_s, &run.latency, run.client_cpu.as_ref());
        flags(&mut text, run.errors, run.aborted.as_deref());
        let row = format!("{} (c={})", run.scenario, run.concurrency);
        table.put(
            row,
            column,
            Cell {
                text,
                value: Some(run.ops_per_s),
            },
        );
    }
    for pg in &input.pg_roles {
        add_pg_roles(table, &name(&pg.system), pg);
    }
    for expiry in &input.expiry {
        add_expiry(table, &name(&expiry.system), expiry);
    }
    for scale in &input.scale {
        add_scale(table, &name(&scale.system), scale);
    }
    if let (Some(system), Some(ready_s)) = (&input.system, input.ready_s) {
        let column = table.column(&name(system), system);
        table.put(
            "restart with the `scale` sessions in the store: until ready (s, lower is better)".to_owned(),
            column,
            Cell {
                text: format!("{} s", secs(ready_s)),
                value: Some(ready_s),
            },
        );
    }
    for (key, value) in &input.rest {
        if KNOWN_KEYS.contains(&key.as_str()) {
            continue;
        }
        let Value::Array(items) = value else { continue };
        let system = items
            .iter()
            .find_map(|i| i.get("system").and_then(Value::as_str))
            .unwrap_or("");
        let label = match (&input.label, system) {
            (Some(label), _) => label.clone(),
            (None, "") => file.to_owned(),
            (None, system) => system.to_owned(),
        };
        let column = table.column(&label, system);
        for (n, item) in items.iter().enumerate() {
            let mut leaves = Vec::new();
            numeric_leaves(item, String::new(), &mut leaves);
            let tag = if items.len() > 1 {
                format!(" #{}", n + 1)
            } else {
                String::new()
            };
            for (path, figure) in leaves {
                let cell = Cell {
                    text: number(figure),
                    value: None,
                };
                table.put(format!("{key}{tag}: {path}"), column, cell);
            }
        }
    }
}

fn add_pg_roles(table: &mut Table, name: &str, pg: &PgRoles) {
    let column = table.column(name, &pg.system);
    let c = pg.concurrency;
    let mut text = rate_cell(
        pg.issue.ops_per_s,
        &pg.issue.latency,
        pg.issue.client_cpu.as_ref(),
    );
    if pg.issue.ops < pg.requested as u64 {
        text.push_str(&format!(" · {} of {} issued", pg.issue.ops, pg.requested));
    }
    flags(&mut text, pg.issue.errors, pg.issue.aborted.as_deref());
    table.put(
        format!("pg-roles issue (c={c})"),
        column,
        Cell {
            text,
            value: Some(pg.issue.ops_per_s),
        },
    );

    let r = &pg.revoke;
    let mut text = format!("{}/s", rate(pg.revoked_per_s));
    match pg.all_confirmed_s {
        Some(s) => text.push_str(&format!(
            " · requests {} s, all confirmed {} s",
            secs(r.elapsed_s),
            secs(s)
        )),
        None => text.push_str(&format!(" · **{} NOT confirmed**", pg.unconfirmed)),
    }
    text.push_str(&format!(
        " · p50 {} / p99 {} ms{}",
        ms(r.latency.p50_ms),
        ms(r.latency.p99_ms),
        cpu(r.client_cpu.as_ref())
    ));
    flags(&mut text, r.errors, r.aborted.as_deref());
    table.put(
        format!("pg-roles revoke until confirmed (c={c})"),
        column,
        Cell {
            text,
            value: Some(pg.revoked_per_s),
        },
    );

    let l = &pg.logins;
    let left = pg.roles_left.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let text = format!(
        "{left} roles left · logins before {}/{} ok, after {}/{} refused",
        l.before_ok, l.before_tried, l.after_refused, l.after_tried
    );
    table.put(
        format!("pg-roles in PostgreSQL afterwards (c={c})"),
        column,
        Cell { text, value: None },
    );
    if pg.pg_host_auth.as_deref().is_some_and(|a| a.contains("trust")) {
        table.note(
            "PostgreSQL trusts loopback logins here (`trust` in `pg_hba.conf`): passwords are not \
             checked, so a refused login means the role is gone."
                .to_owned(),
        );
    }
}

fn add_expiry(table: &mut Table, name: &str, e: &Expiry) {
    let column = table.column(name, &e.system);
    let mut text = format!("{} · {}/s", e.created, rate(e.create.per_s));
    bulk_flags(&mut text, &e.create);
    table.put(
        "mass-expiry: items created with one deadline".to_owned(),
        column,
        Cell {
            text,
            value: Some(e.create.per_s),
        },
    );
    let mut text = format!(
        "{} (over {} tokens watched)",
        e.accepted_after_deadline, e.samples
    );
    if e.never_inactive > 0 {
        text.push_str(&format!(" · **{} never inactive**", e.never_inactive));
    }
    table.put(
        "mass-expiry: `active` answers after the deadline".to_owned(),
        column,
        Cell { text, value: None },
    );
    if let Some(lag) = &e.inactive_lag {
        table.put(
            "mass-expiry: deadline → answered inactive (ms, p99 compared, lower is better)".to_owned(),
            column,
            Cell {
                text: format!(
                    "p50 {} / p99 {} / max {} ms",
                    ms(lag.p50_ms),
                    ms(lag.p99_ms),
                    ms(lag.max_ms)
                ),
                value: Some(lag.p99_ms),
            },
        );
    }
    if let Some(own) = &e.lookup_self {
        let text = match &own.inactive_lag {
            Some(lag) => format!(
                "p50 {} / p99 {} / max {} ms · {} `active` answers after the deadline ({} tokens)",
                ms(lag.p50_ms),
                ms(lag.p99_ms),
                ms(lag.max_ms),
                own.accepted_after_deadline,
                own.samples
            ),
            None => format!("none of {} answered inactive", own.samples),
        };
        table.put(
            "mass-expiry: the token presenting itself (OpenBao `lookup-self`): deadline → inactive"
                .to_owned(),
            column,
            Cell { text, value: None },
        );
    }
    let text = match e.all_revoked_s {
        Some(s) => format!("{} s", secs(s)),
        None => "**not within the timeout**".to_owned(),
    };
    let text = match e.max_uncleared {
        Some(n) => format!("{text} (at most {n} pending)"),
        None => text,
    };
    table.put(
        "mass-expiry: deadline → server recorded every item gone (s, lower is better)".to_owned(),
        column,
        Cell {
            text,
            value: e.all_revoked_s,
        },
    );
}

fn add_scale(table: &mut Table, name: &str, s: &Scale) {
    let column = table.column(name, &s.system);
    let noun = match (s.system.as_str(), s.with_credentials) {
        ("stint", true) => "sessions with a JWT",
        ("stint", false) => "sessions",
        _ => "tokens",
    };
    let mut text = format!(
        "{} of {} {noun} in {} s · {}/s · p99 {} ms",
        s.create.ok,
        s.requested,
        secs(s.create.elapsed_s),
        rate(s.create.per_s),
        ms(s.create.latency.p99_ms)
    );
    bulk_flags(&mut text, &s.create);
    table.put(
        "scale: live sessions (OpenBao: tokens) created".to_owned(),
        column,
        Cell {
            text,
            value: Some(s.create.per_s),
        },
    );
    if let Some(bytes) = s.rss_per_item_bytes {
        let mut text = format!("{} B", rate(bytes));
        if let Some(rss) = &s.rss {
            let mib = |kib: u64| kib as f64 / 1024.0;
            text.push_str(&format!(
                " (RSS {:.0} → {:.0} MiB)",
                mib(rss.before_kib),
                mib(rss.after_kib)
            ));
        }
        table.put(
            "scale: server memory per live item (bytes, lower is better)".to_owned(),
            column,
            Cell {
                text,
                value: Some(bytes),
            },
        );
    }
}

fn bulk_flags(text: &mut String, b: &Bulk) {
    if b.ok < b.requested as u64 {
        text.push_str(&format!(" · {} of {} done", b.ok, b.requested));
    }
    flags(text, b.errors, b.stopped.as_deref());
}

/// `1,234/s · p50 1.20 / p99 9.8 ms · CPU 31% CLIENT-BOUND`.
fn rate_cell(per_s: f64, latency: &Latency, client: Option<&Cpu>) -> String {
    format!(
        "{}/s · p50 {} / p99 {} ms{}",
        rate(per_s),
        ms(latency.p50_ms),
        ms(latency.p99_ms),
        cpu(client)
    )
}

fn cpu(client: Option<&Cpu>) -> String {
    match client {
        Some(c) if c.client_bound => format!(" · CPU {:.0}% **CLIENT-BOUND**", c.machine_fraction * 100.0),
        Some(c) => format!(" · CPU {:.0}%", c.machine_fraction * 100.0),
        None => String::new(),
    }
}

fn flags(text: &mut String, errors: u64, aborted: Option<&str>) {
    if errors > 0 {
        text.push_str(&format!(" · {errors} errors"));
    }
    if aborted.is_some() {
        text.push_str(" · **stopped early**");
    }
}

/// A rate: whole numbers with thousands separators from 100 up, one decimal below.
fn rate(x: f64) -> String {
    if !x.is_finite() {
        return "?".to_owned();
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// `1.54×`; small ratios with three decimals so they do not read as zero.
fn ratio(x: f64) -> String {
    if x < 0.1 {
        format!("{x:.3}×")
    } else {
        format!("{x:.2}×")
    }
}

/// Milliseconds with three significant digits or so.
fn ms(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// Seconds: two decimals below 10, one below 100, none above.
fn secs(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// Any figure: integers as such, others with up to three decimals.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Every numeric leaf under `value`, with its dotted path (arrays of numbers are skipped).
fn numeric_leaves(value: &Value, path: String, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((path, x));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                numeric_leaves(v, path, out);
            }
        }
        _ => {}
    }
}

/// The name a ratio column uses for a system: `openbao-raft` → `raft`.
fn short(name: &str) -> &str {
    name.strip_prefix("openbao-").unwrap_or(name)
}

fn render(table: &Table) -> String {
    let baseline = table.columns.iter().position(|c| c.stint);
    let others: Vec<usize> = match baseline {
        Some(b) => (0..table.columns.len()).filter(|&i| i != b).collect(),
        None => Vec::new(),
    };
    let base_name = baseline.map_or("", |b| short(&table.columns[b].name));
    let mut out = String::from("| work |");
    for column in &table.columns {
        let _ = write!(out, " {} |", column.name);
    }
    for &i in &others {
        let _ = write!(out, " {base_name}/{} |", short(&table.columns[i].name));
    }
    out.push_str("\n| --- |");
    for _ in 0..table.columns.len() + others.len() {
        out.push_str(" --- |");
    }
    out.push('\n');
    for row in &table.rows {
        let _ = write!(out, "| {} |", escape(&row.name));
        for i in 0..table.columns.len() {
            let text = row.cells.get(&i).map_or("—", |c| c.text.as_str());
            let _ = write!(out, " {} |", escape(text));
        }
        for &i in &others {
            let ratio = baseline
                .and_then(|b| row.cells.get(&b))
                .and_then(|c| c.value)
                .zip(row.cells.get(&i).and_then(|c| c.value))
                .filter(|&(base, other)| base > 0.0 && other > 0.0)
                .map_or_else(|| "—".to_owned(), |(b, o)| ratio(b / o));
            let _ = write!(out, " {ratio} |");
        }
        out.push('\n');
    }
    if !table.notes.is_empty() {
        out.push('\n');
        for note in &table.notes {
            let _ = writeln!(out, "{note}");
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn run(system: &str, scenario: &str, c: usize, per_s: f64, bound: bool) -> Value {
        serde_json::json!({
            "system": system, "scenario": scenario, "concurrency": c, "duration_s": 2.0,
            "max_requests": null, "prepared": 0, "ops": 100, "errors": 0, "elapsed_s": 2.0,
            "ops_per_s": per_s,
            "latency": {"count": 100, "mean_ms": 1.0, "p50_ms": 1.234, "p90_ms": 2.0, "p99_ms": 12.5,
                        "p999_ms": 20.0, "max_ms": 30.0},
            "client_cpu": {"cpu_s": 1.0, "wall_s": 2.0, "cores": 2, "cores_used": 0.5,
                           "machine_fraction": if bound { 0.31 } else { 0.1 }, "client_bound": bound},
            "error_samples": [], "aborted": null,
        })
    }

    fn pg(system: &str, issue: f64, revoked: f64) -> Value {
        let phase = |per_s: f64| {
            serde_json::json!({
                "ops": 100, "errors": 0, "elapsed_s": 0.5, "ops_per_s": per_s,
                "latency": {"count": 100, "mean_ms": 1.0, "p50_ms": 40.0, "p90_ms": 50.0, "p99_ms": 130.0,
                            "p999_ms": 140.0, "max_ms": 150.0},
                "client_cpu": null, "error_samples": [], "aborted": null,
            })
        };
        serde_json::json!({
            "system": system, "scenario": "pg-roles", "concurrency": 16, "requested": 100,
            "role_prefix": null, "issue": phase(issue), "revoke": phase(200.0),
            "all_confirmed_s": 0.8, "revoked_per_s": revoked, "confirmed": 100, "unconfirmed": 0,
            "revocation_failed": 0, "roles_left": 0, "roles_left_sample": [],
            "logins": {"before_tried": 3, "before_ok": 3, "after_tried": 20, "after_refused": 20,
                       "after_role_missing": 20, "first_refusal": "role does not exist"},
            "pg_host_auth": "trust", "usernames": ["x"], "problems": [],
        })
    }

    fn file(name: &str, value: Value) -> (String, String) {
        (name.to_owned(), value.to_string())
    }

    #[test]
    fn three_systems_side_by_side_with_ratios_against_stint() {
        let files = [
            file(
                "stint.json",
                serde_json::json!({"tool": "stint-bench", "version": "0", "label": "stint",
                    "runs": [run("stint", "issue", 16, 1233.0, false), run("stint", "introspect", 16, 30573.4, true)],
                    "pg_roles": [pg("stint", 336.0, 558.0)]}),
            ),
            file(
                "raft.json",
                serde_json::json!({"tool": "stint-bench", "version": "0", "label": "openbao-raft",
                    "runs": [run("openbao", "issue", 16, 803.0, false), run("openbao", "introspect", 16, 4287.0, false)],
                    "pg_roles": [pg("openbao", 189.0, 62.0)]}),
            ),
            file(
                "dev.json",
                serde_json::json!({"label": "openbao-dev",
                    "runs": [run("openbao", "issue", 16, 3078.0, false)]}),
            ),
        ];
        let md = markdown(&files).unwrap();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| work | stint | openbao-raft | openbao-dev | stint/raft | stint/dev |"
        );
        assert_eq!(lines[1], "| --- | --- | --- | --- | --- | --- |");
        assert_eq!(
            lines[2],
            "| issue (c=16) | 1,233/s · p50 1.23 / p99 12.5 ms · CPU 10% | 803/s · p50 1.23 / p99 12.5 ms · CPU 10% \
             | 3,078/s · p50 1.23 / p99 12.5 ms · CPU 10% | 1.54× | 0.40× |"
        );
        assert!(
            lines[3].starts_with(
                "| introspect (c=16) | 30,573/s · p50 1.23 / p99 12.5 ms · CPU 31% **CLIENT-BOUND** |"
            ),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("| — | 7.13× | — |"), "{}", lines[3]);
        assert!(lines[4].starts_with("| pg-roles issue (c=16) | 336/s · p50 40.0 / p99 130 ms |"));
        assert!(lines[4].ends_with("| 1.78× | — |"), "{}", lines[4]);
        assert!(
            lines[5].starts_with(
                "| pg-roles revoke until confirmed (c=16) | 558/s · requests 0.50 s, all confirmed 0.80 s"
            ),
            "{}",
            lines[5]
        );
        assert!(lines[5].ends_with("| 9.00× | — |"), "{}", lines[5]);
        assert_eq!(
            lines[6],
            "| pg-roles in PostgreSQL afterwards (c=16) | 0 roles left · logins before 3/3 ok, after 20/20 refused \
             | 0 roles left · logins before 3/3 ok, after 20/20 refused | — | — | — |"
        );
        assert!(md.contains("\n\nPostgreSQL trusts loopback logins"), "{md}");
    }

    #[test]
    fn files_of_one_system_merge_and_unknown_arrays_are_listed_by_field() {
        let files = [
            file(
                "a.json",
                serde_json::json!({"runs": [run("stint", "end", 64, 1847.0, false)]}),
            ),
            file(
                "b.json",
                serde_json::json!({"label": "stint",
                    "mass_expiry": [{"system": "stint", "sessions": 1000, "lag": {"p99_ms": 4.5}, "note": "x"}]}),
            ),
        ];
        let md = markdown(&files).unwrap();
        assert!(md.starts_with("| work | stint |\n| --- | --- |\n"), "{md}");
        assert!(md.contains("| end (c=64) | 1,847/s"), "{md}");
        assert!(md.contains("| mass_expiry: lag.p99_ms | 4.5 |"), "{md}");
        assert!(md.contains("| mass_expiry: sessions | 1000 |"), "{md}");
    }

    #[test]
    fn errors_and_early_stops_are_flagged() {
        let mut r = run("openbao", "end", 16, 50.0, false);
        r["errors"] = 7.into();
        r["aborted"] = "stopped early".into();
        let md = markdown(&[file("x.json", serde_json::json!({"runs": [r]}))]).unwrap();
        assert!(
            md.contains("50.0/s · p50 1.23 / p99 12.5 ms · CPU 10% · 7 errors · **stopped early** |"),
            "{md}"
        );
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        let error = markdown(&[("x.json".into(), "not json".into())]).unwrap_err();
        assert!(error.to_string().starts_with("`x.json` is not"), "{error}");
        assert!(matches!(
            markdown(&[("e.json".into(), "{}".into())]),
            Err(ReportError::Empty)
        ));
    }

    #[test]
    fn expiry_scale_and_ready_rows() {
        let bulk = |per_s: f64| {
            serde_json::json!({"requested": 1000, "ok": 1000, "errors": 0, "elapsed_s": 2.0, "per_s": per_s,
                "latency": {"count": 1, "mean_ms": 1.0, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 3.0,
                            "p999_ms": 3.0, "max_ms": 3.0}, "error_samples": [], "stopped": null})
        };
        let stint = serde_json::json!({"label": "stint",
            "expiry": [{"system": "stint", "requested": 1000, "created": 1000, "create": bulk(500.0),
                "samples": 200, "inactive_lag": {"count": 200, "p50_ms": 1.5, "p99_ms": 4.0, "max_ms": 9.0},
                "accepted_after_deadline": 0, "never_inactive": 0, "all_revoked_s": 0.25, "max_uncleared": 40}],
            "scale": [{"system": "stint", "requested": 1000, "created": 1000, "with_credentials": false,
                "create": bulk(2000.0), "rss": {"pid": 1, "before_kib": 30720, "peak_kib": 40960,
                "after_kib": 40960}, "rss_per_item_bytes": 10485.76}]});
        let bao = serde_json::json!({"label": "openbao-dev",
            "expiry": [{"system": "openbao", "requested": 1000, "created": 1000, "create": bulk(1000.0),
                "samples": 200, "inactive_lag": {"count": 200, "p50_ms": 2.0, "p99_ms": 8.0, "max_ms": 9.0},
                "accepted_after_deadline": 0, "all_revoked_s": 5.0,
                "lookup_self": {"samples": 200, "accepted_after_deadline": 3,
                    "inactive_lag": {"count": 200, "p50_ms": 80.0, "p99_ms": 450.0, "max_ms": 460.0}}}]});
        let ready = serde_json::json!({"system": "stint", "url": "http://x:1", "path": "/readyz",
            "ready_s": 0.5, "first_answer_s": 0.1, "polls": 9});
        let md = markdown(&[file("s.json", stint), file("b.json", bao), file("r.json", ready)]).unwrap();
        let row = |start: &str| {
            md.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("{start} in {md}"))
                .to_owned()
        };
        assert_eq!(
            row("| mass-expiry: items created"),
            "| mass-expiry: items created with one deadline | 1000 · 500/s | 1000 · 1,000/s | 0.50× |"
        );
        assert!(
            row("| mass-expiry: `active` answers")
                .contains("| 0 (over 200 tokens watched) | 0 (over 200 tokens watched) | — |")
        );
        assert!(
            row("| mass-expiry: deadline → answered").ends_with(
                "| p50 1.50 / p99 4.00 / max 9.00 ms | p50 2.00 / p99 8.00 / max 9.00 ms | 0.50× |"
            )
        );
        assert!(
            row("| mass-expiry: deadline → server")
                .ends_with("| 0.25 s (at most 40 pending) | 5.00 s | 0.050× |")
        );
        assert_eq!(
            row("| scale: live sessions"),
            "| scale: live sessions (OpenBao: tokens) created | 1000 of 1000 sessions in 2.00 s · 2,000/s · p99 3.00 ms \
             | — | — |"
        );
        assert!(row("| scale: server memory").contains("| 10,486 B (RSS 30 → 40 MiB) |"));
        let names: Vec<&str> = md.lines().map(|l| l.split(" | ").next().unwrap_or("")).collect();
        let at = |prefix: &str| names.iter().position(|n| n.starts_with(prefix)).unwrap();
        assert_eq!(
            at("| mass-expiry: the token presenting itself"),
            at("| mass-expiry: deadline → server") + 1,
            "a row new to a later file joins its section: {md}"
        );
        assert!(row("| mass-expiry: the token presenting itself").ends_with(
            "| — | p50 80.0 / p99 450 / max 460 ms · 3 `active` answers after the deadline (200 tokens) | — |"
        ));
        assert!(row("| restart with").contains("| 0.50 s | — | — |"));
    }

    #[test]
    fn the_block_replaces_its_markers_or_goes_before_the_first_section() {
        let b = block("Run", &["one".into(), "two".into()], "| t |\n");
        assert_eq!(b, format!("{BEGIN}\n## Run\n\none\n\ntwo\n\n| t |\n{END}\n"));
        let doc = "# Benchmarks\n\nIntro.\n\n## Old\n\ntext\n";
        let once = splice(doc, &b);
        assert_eq!(once, format!("# Benchmarks\n\nIntro.\n\n{b}\n## Old\n\ntext\n"));
        let b2 = block("New", &[], "| u |");
        let twice = splice(&once, &b2);
        assert_eq!(twice, format!("# Benchmarks\n\nIntro.\n\n{b2}\n## Old\n\ntext\n"));
        assert_eq!(splice(&twice, &b2), twice, "idempotent");
        assert_eq!(splice("# T\n", &b2), format!("# T\n\n{b2}"));
        assert_eq!(splice("", &b2), b2);
    }

    #[test]
    fn no_ratio_from_a_figure_that_is_not_positive() {
        let r = |system: &str, label: &str, per_s: f64| serde_json::json!({"label": label, "runs": [run(system, "end", 16, per_s, false)]});
        let md = markdown(&[
            file("s.json", r("stint", "stint", -5.0)),
            file("b.json", r("openbao", "openbao-dev", 10.0)),
        ])
        .unwrap();
        assert!(md.lines().nth(2).unwrap().ends_with("| — |"), "{md}");
    }

    #[test]
    fn figures_are_formatted_for_reading() {
        assert_eq!(rate(30573.4), "30,573");
        assert_eq!(rate(999.6), "1,000");
        assert_eq!(rate(100.0), "100");
        assert_eq!(rate(62.04), "62.0");
        assert_eq!(rate(1234567.0), "1,234,567");
        assert_eq!(ms(0.444), "0.44");
        assert_eq!(ms(41.26), "41.3");
        assert_eq!(ms(138.2), "138");
        assert_eq!(number(1000.0), "1000");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1.0 / 3.0), "0.333");
    }
}
