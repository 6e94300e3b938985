//! The embedded SQLite backend (WAL, `synchronous = FULL`, writes under `BEGIN IMMEDIATE`).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use stint_core::audit::{GENESIS_HASH, Verifier, format_time};
use stint_core::{AuditRecord, ChainVerification, CredentialKind, Session, SessionId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{
    Batch, DocumentRecord, DocumentWrite, PrincipalRecord, PrincipalWrite, RevocationRecord, SeenRecord,
    SessionFilter, SessionWrite, Store, StoreError, StoreResult, TargetRecord, TargetWrite, Versioned,
    is_outbox_entry, needs_revocation, revocation_name,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite store in one file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writes: tokio::sync::mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

/// The chain's head (seq and hash) kept in a file beside the database, rewritten after every commit
/// that appends events. Verification compares the table with it, so events cut from the end of the
/// chain are found too. (It is not fsynced: it guards against removal, not against a power cut.)
#[derive(Debug)]
struct Anchor {
    path: std::path::PathBuf,
    head: std::sync::Mutex<i64>,
}

impl Anchor {
    fn read(path: &Path) -> Option<(i64, String)> {
        let text = std::fs::read_to_string(path).ok()?;
        let (seq, hash) = text.trim().split_once(' ')?;
        Some((seq.parse().ok()?, hash.to_owned()))
    }

    fn advance(&self, seq: i64, hash: &str) {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        if seq <= *head {
            return;
        }
        let tmp = self.path.with_extension("head.tmp");
        let written =
            std::fs::write(&tmp, format!("{seq} {hash}\n")).and_then(|()| std::fs::rename(&tmp, &self.path));
        match written {
            Ok(()) => *head = seq,
            // The chain stays correct; only its end is not anchored this time.
            Err(e) => tracing::warn!(error = %e, "cannot write the audit head file"),
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate("name".to_owned()),
        _ => backend(e),
    }
}

fn parse_time(s: &str) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(backend)
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(backend)
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and runs the migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let path = path.with_extension("head");
        let seq = Anchor::read(&path).map_or(0, |(seq, _)| seq);
        let anchor = std::sync::Arc::new(Anchor {
            path,
            head: std::sync::Mutex::new(seq),
        });
        Self::connect(opts, READERS, Some(anchor)).await
    }

    /// Opens an in-memory database (tests).
    pub async fn in_memory() -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(backend)?;
        // One connection: every connection to `:memory:` is its own database.
        Self::connect(opts, 1, None).await
    }

    async fn connect(
        opts: SqliteConnectOptions,
        connections: u32,
        anchor: Option<std::sync::Arc<Anchor>>,
    ) -> StoreResult<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(opts.clone())
            .await
            .map_err(backend)?;
        MIGRATOR.run(&pool).await.map_err(backend)?;
        // A file database gets a connection of its own for the writer, so a group commit never
        // queues behind readers for a pooled connection (under load that queue made issue latency
        // collapse). `:memory:` has one connection only: every connection would be its own database.
        let conn = if anchor.is_some() {
            use sqlx::ConnectOptions as _;
            WriteConn::Own(Box::new(opts.connect().await.map_err(backend)?))
        } else {
            WriteConn::Pool(pool.clone())
        };
        let (writes, rx) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer(conn, anchor, rx));
        Ok(Self { pool, writes })
    }

    fn anchor_path(&self) -> Option<std::path::PathBuf> {
        let opts = self.pool.connect_options();
        let file = opts.get_filename();
        (file.as_os_str() != ":memory:" && !file.as_os_str().is_empty()).then(|| file.with_extension("head"))
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs raw SQL (tests use it to tamper with the audit table).
    pub async fn execute_raw(&self, sql: String) -> StoreResult<u64> {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected())
    }
}

fn principal_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<PrincipalRecord> {
    let groups: String = r.try_get("groups_json").map_err(backend)?;
    let deleted: Option<String> = r.try_get("deleted_at").map_err(backend)?;
    Ok(PrincipalRecord {
        id: r.try_get("id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        kind: r.try_get("kind").map_err(backend)?,
        groups: serde_json::from_str(&groups).map_err(backend)?,
        key_hash: r.try_get("key_hash").map_err(backend)?,
        created_at: parse_time(&r.try_get::<String, _>("created_at").map_err(backend)?)?,
        deleted_at: deleted.as_deref().map(parse_time).transpose()?,
    })
}

fn target_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<TargetRecord> {
    Ok(TargetRecord {
        name: r.try_get("name").map_err(backend)?,
        kind: r.try_get("kind").map_err(backend)?,
        doc: r.try_get("doc").map_err(backend)?,
        created_at: parse_time(&r.try_get::<String, _>("created_at").map_err(backend)?)?,
    })
}

fn session_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<Versioned> {
    let doc: String = r.try_get("doc").map_err(backend)?;
    Ok(Versioned {
        session: serde_json::from_str::<Session>(&doc).map_err(backend)?,
        version: r.try_get("version").map_err(backend)?,
    })
}

const REVOCATION_COLUMNS: &str =
    "credential, session, target, kind, handle, expires_at, state, attempts, last_error";

fn revocation_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<RevocationRecord> {
    let expires: i64 = r.try_get("expires_at").map_err(backend)?;
    let attempts: i64 = r.try_get("attempts").map_err(backend)?;
    Ok(RevocationRecord {
        credential: r.try_get("credential").map_err(backend)?,
        session: r.try_get("session").map_err(backend)?,
        target: r.try_get("target").map_err(backend)?,
        kind: r.try_get("kind").map_err(backend)?,
        handle: r.try_get("handle").map_err(backend)?,
        expires_at: OffsetDateTime::from_unix_timestamp(expires).map_err(backend)?,
        state: r.try_get("state").map_err(backend)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error: r.try_get("last_error").map_err(backend)?,
    })
}

fn audit_row(r: &sqlx::sqlite::SqliteRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        session: r.try_get("session")?,
        details: r.try_get("details")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

const AUDIT_COLUMNS: &str = "seq, at, actor, action, session, details, prev_hash, hash";

async fn write_principal(
    tx: &mut sqlx::SqliteConnection,
    p: &PrincipalRecord,
    insert: bool,
) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO principals (id, name, kind, groups_json, key_hash, created_at, deleted_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    } else {
        "UPDATE principals SET name = ?2, kind = ?3, groups_json = ?4, key_hash = ?5, \
         created_at = ?6, deleted_at = ?7 WHERE id = ?1"
    };
    let r = sqlx::query(sql)
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.kind)
        .bind(json(&p.groups)?)
        .bind(&p.key_hash)
        .bind(format_time(p.created_at))
        .bind(p.deleted_at.map(format_time))
        .execute(&mut *tx)
        .await
        .map_err(|e| match db_err(e) {
            StoreError::Duplicate(_) => StoreError::Duplicate(p.name.clone()),
            other => other,
        })?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn write_target(tx: &mut sqlx::SqliteConnection, w: &TargetWrite) -> StoreResult<()> {
    let r = match w {
        TargetWrite::Insert(t) => {
            sqlx::query("INSERT INTO targets (name, kind, doc, created_at) VALUES (?1, ?2, ?3, ?4)")
                .bind(&t.name)
                .bind(&t.kind)
                .bind(&t.doc)
                .bind(format_time(t.created_at))
                .execute(&mut *tx)
                .await
                .map_err(|e| match db_err(e) {
                    StoreError::Duplicate(_) => StoreError::Duplicate(t.name.clone()),
                    other => other,
                })?
        }
        TargetWrite::Update(t) => sqlx::query("UPDATE targets SET kind = ?2, doc = ?3 WHERE name = ?1")
            .bind(&t.name)
            .bind(&t.kind)
            .bind(&t.doc)
            .execute(&mut *tx)
            .await
            .map_err(backend)?,
        TargetWrite::Delete(name) => sqlx::query("DELETE FROM targets WHERE name = ?1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(backend)?,
    };
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

async fn write_session(tx: &mut sqlx::SqliteConnection, w: &SessionWrite) -> StoreResult<()> {
    let s = &w.session;
    let doc = json(s)?;
    let r = match w.expected_version {
        None => sqlx::query(
            "INSERT INTO sessions (id, principal, target, state, needs_revocation, version, doc, \
             binding_kind, binding_ref) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?8, ?9)",
        ),
        Some(_) => sqlx::query(
            "UPDATE sessions SET principal = ?2, target = ?3, state = ?4, needs_revocation = ?5, \
             version = version + 1, doc = ?6, binding_kind = ?8, binding_ref = ?9 \
             WHERE id = ?1 AND version = ?7",
        ),
    }
    .bind(s.id.as_str())
    .bind(s.principal.as_str())
    .bind(&s.target)
    .bind(s.state.as_str())
    .bind(needs_revocation(s))
    .bind(doc)
    .bind(w.expected_version.unwrap_or(0))
    .bind(binding_kind(s))
    .bind(s.binding.reference.as_deref())
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::Conflict);
    }
    write_revocations(tx, s).await
}

/// Writes sessions: new ones one by one, changed ones many per statement (an `UPDATE … FROM
/// (VALUES …)` that only touches rows still at their expected version; fewer rows changed than
/// given is a conflict and fails the batch).
async fn write_sessions(tx: &mut sqlx::SqliteConnection, writes: &[SessionWrite]) -> StoreResult<()> {
    let (updates, inserts): (Vec<&SessionWrite>, Vec<&SessionWrite>) =
        writes.iter().partition(|w| w.expected_version.is_some());
    for w in inserts {
        write_session(tx, w).await?;
    }
    if let [one] = updates.as_slice() {
        return write_session(tx, one).await;
    }
    for chunk in updates.chunks(SESSIONS_PER_UPDATE) {
        let docs = chunk
            .iter()
            .map(|w| json(&w.session))
            .collect::<StoreResult<Vec<String>>>()?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "UPDATE sessions SET principal = v.column2, target = v.column3, state = v.column4, \
             needs_revocation = v.column5, version = sessions.version + 1, doc = v.column6, \
             binding_kind = v.column8, binding_ref = v.column9 FROM (",
        );
        q.push_values(chunk.iter().zip(&docs), |mut row, (w, doc)| {
            let s = &w.session;
            row.push_bind(s.id.as_str())
                .push_bind(s.principal.as_str())
                .push_bind(s.target.as_str())
                .push_bind(s.state.as_str())
                .push_bind(needs_revocation(s))
                .push_bind(doc.as_str())
                .push_bind(w.expected_version.unwrap_or(0))
                .push_bind(binding_kind(s))
                .push_bind(s.binding.reference.as_deref());
        });
        q.push(") AS v WHERE sessions.id = v.column1 AND sessions.version = v.column7");
        let r = q.build().execute(&mut *tx).await.map_err(db_err)?;
        if r.rows_affected() != chunk.len() as u64 {
            return Err(StoreError::Conflict);
        }
        for w in chunk {
            write_revocations(tx, &w.session).await?;
        }
    }
    Ok(())
}

fn binding_kind(s: &Session) -> Option<String> {
    match serde_json::to_value(s.binding.kind) {
        Ok(serde_json::Value::String(k)) => Some(k),
        _ => None,
    }
}

async fn write_document(tx: &mut sqlx::SqliteConnection, w: &DocumentWrite) -> StoreResult<()> {
    match w {
        DocumentWrite::Insert(d) => {
            sqlx::query("INSERT INTO documents (kind, name, doc, created_at) VALUES (?1, ?2, ?3, ?4)")
                .bind(&d.kind)
                .bind(&d.name)
                .bind(&d.doc)
                .bind(format_time(d.created_at))
                .execute(&mut *tx)
                .await
                .map_err(|e| match db_err(e) {
                    StoreError::Duplicate(_) => StoreError::Duplicate(d.name.clone()),
                    other => other,
                })?;
        }
        DocumentWrite::Delete(kind, name) => {
            let r = sqlx::query("DELETE FROM documents WHERE kind = ?1 AND name = ?2")
                .bind(kind)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        }
    }
    Ok(())
}

async fn write_seen(tx: &mut sqlx::SqliteConnection, r: &SeenRecord) -> StoreResult<()> {
    // A guard that expired may be taken again; a live one fails the batch.
    let done = sqlx::query(
        "INSERT INTO seen (kind, key, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (kind, key) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE seen.expires_at <= ?4",
    )
    .bind(&r.kind)
    .bind(&r.key)
    .bind(r.expires_at.unix_timestamp())
    .bind(r.recorded_at.unix_timestamp())
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Duplicate(format!("{}:{}", r.kind, r.key)));
    }
    Ok(())
}

/// Mirrors the revocation state of the session's external credentials into the outbox table.
async fn write_revocations(tx: &mut sqlx::SqliteConnection, s: &Session) -> StoreResult<()> {
    for c in s.credentials.iter().filter(|c| is_outbox_entry(c)) {
        sqlx::query(
            "INSERT INTO revocations (credential, session, target, kind, handle, expires_at, state, \
             attempts, last_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (credential) DO UPDATE SET state = ?7, attempts = ?8, last_error = ?9, \
             expires_at = ?6",
        )
        .bind(c.id.as_str())
        .bind(s.id.as_str())
        .bind(&s.target)
        .bind(c.kind.as_str())
        .bind(&c.handle)
        .bind(c.expires_at.unix_timestamp())
        .bind(revocation_name(c.revocation))
        .bind(i64::from(c.revocation_attempts))
        .bind(c.revocation_error.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

/// Writes one batch inside an open transaction, appending its audit events after `head`; returns the
/// sealed records.
async fn write_batch(
    conn: &mut sqlx::SqliteConnection,
    batch: &Batch,
    head: &(i64, String),
) -> StoreResult<Vec<AuditRecord>> {
    for p in &batch.principals {
        match p {
            PrincipalWrite::Insert(p) => write_principal(conn, p, true).await?,
            PrincipalWrite::Update(p) => write_principal(conn, p, false).await?,
        }
    }
    for t in &batch.targets {
        write_target(conn, t).await?;
    }
    for d in &batch.documents {
        write_document(conn, d).await?;
    }
    for r in &batch.seen {
        write_seen(conn, r).await?;
    }
    write_sessions(conn, &batch.sessions).await?;
    let (mut seq, mut prev) = head.clone();
    let mut sealed = Vec::with_capacity(batch.audit.len());
    for ev in &batch.audit {
        seq += 1;
        let rec = ev.seal(seq, &prev);
        prev = rec.hash.clone();
        sealed.push(rec);
    }
    // Many rows per statement: each statement is a round trip to SQLite's worker thread.
    for chunk in sealed.chunks(AUDIT_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit (seq, at, actor, action, session, details, prev_hash, hash) ",
        );
        q.push_values(chunk, |mut row, rec| {
            row.push_bind(rec.seq)
                .push_bind(&rec.at)
                .push_bind(&rec.actor)
                .push_bind(&rec.action)
                .push_bind(&rec.session)
                .push_bind(&rec.details)
                .push_bind(&rec.prev_hash)
                .push_bind(&rec.hash);
        });
        q.build().execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(sealed)
}

/// One caller's batch waiting for the writer.
struct Pending {
    batch: Batch,
    reply: tokio::sync::oneshot::Sender<StoreResult<Vec<AuditRecord>>>,
}

/// Audit rows per `INSERT` (8 binds each, far below SQLite's 32766).
const AUDIT_ROWS_PER_INSERT: usize = 256;

/// Sessions per multi-row `UPDATE` (9 binds each).
const SESSIONS_PER_UPDATE: usize = 256;

/// Ids per `IN (…)` read.
const BINDS_PER_READ: usize = 500;

/// Most batches one transaction carries.
const MAX_GROUP: usize = 64;

/// Pooled connections for reads (the writer has its own).
const READERS: u32 = 4;

/// Where the writer gets its connection.
enum WriteConn {
    /// Its own, held for the store's life.
    Own(Box<sqlx::SqliteConnection>),
    /// From the pool, per group (in-memory databases).
    Pool(SqlitePool),
}

/// The single writer: takes every batch waiting, writes each under its own savepoint (so one
/// batch's conflict rolls back only that batch) and commits the group with one fsync. A caller is
/// answered only after the group's commit: an acknowledged change is durable.
async fn writer(
    mut conn: WriteConn,
    anchor: Option<std::sync::Arc<Anchor>>,
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let results = match &mut conn {
            WriteConn::Own(c) => write_group(c, &group).await,
            WriteConn::Pool(pool) => match pool.acquire().await {
                Ok(mut c) => write_group(&mut c, &group).await,
                Err(e) => group.iter().map(|_| Err(backend(&e))).collect(),
            },
        };
        let last = results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|v| v.last()))
            .max_by_key(|r| r.seq)
            .map(|r| (r.seq, r.hash.clone()));
        if let (Some(a), Some((seq, hash))) = (&anchor, last) {
            a.advance(seq, &hash);
        }
        for (p, r) in group.into_iter().zip(results) {
            let _ = p.reply.send(r);
        }
    }
}

async fn write_group(
    conn: &mut sqlx::SqliteConnection,
    group: &[Pending],
) -> Vec<StoreResult<Vec<AuditRecord>>> {
    let fail_all = |e: &dyn std::fmt::Display| group.iter().map(|_| Err(backend(e))).collect();
    let mut tx = match sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return fail_all(&e),
    };
    let head = match sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
    {
        Ok(Some(r)) => match (r.try_get::<i64, _>("seq"), r.try_get::<String, _>("hash")) {
            (Ok(seq), Ok(hash)) => (seq, hash),
            _ => return fail_all(&"unreadable audit head"),
        },
        Ok(None) => (0, GENESIS_HASH.to_owned()),
        Err(e) => return fail_all(&e),
    };
    let mut head = head;
    let mut results = Vec::with_capacity(group.len());
    for p in group {
        let mut sp = match sqlx::Connection::begin(&mut *tx).await {
            Ok(sp) => sp,
            Err(e) => return fail_all(&e),
        };
        match write_batch(&mut sp, &p.batch, &head).await {
            Ok(records) => {
                if let Err(e) = sp.commit().await {
                    return fail_all(&e);
                }
                if let Some(last) = records.last() {
                    head = (last.seq, last.hash.clone());
                }
                results.push(Ok(records));
            }
            Err(e) => {
                if let Err(e) = sp.rollback().await {
                    return fail_all(&e);
                }
                results.push(Err(e));
            }
        }
    }
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => fail_all(&e),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: Batch) -> StoreResult<Vec<AuditRecord>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writes
            .send(Pending { batch, reply })
            .await
            .map_err(|_| StoreError::Backend("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the store writer stopped".into()))?
    }

    async fn principal(&self, id: &str) -> StoreResult<Option<PrincipalRecord>> {
        sqlx::query("SELECT * FROM principals WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(principal_row)
            .transpose()
    }

    async fn principal_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<PrincipalRecord>> {
        sqlx::query("SELECT * FROM principals WHERE key_hash = ?1 AND deleted_at IS NULL")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(principal_row)
            .transpose()
    }

    async fn principals(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<PrincipalRecord>> {
        sqlx::query("SELECT * FROM principals WHERE id > ?1 ORDER BY id LIMIT ?2")
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(principal_row)
            .collect()
    }

    async fn target(&self, name: &str) -> StoreResult<Option<TargetRecord>> {
        sqlx::query("SELECT * FROM targets WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(target_row)
            .transpose()
    }

    async fn targets(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<TargetRecord>> {
        sqlx::query("SELECT * FROM targets WHERE name > ?1 ORDER BY name LIMIT ?2")
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(target_row)
            .collect()
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<Versioned>> {
        sqlx::query("SELECT doc, version FROM sessions WHERE id = ?1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(session_row)
            .transpose()
    }

    async fn sessions_by_id(&self, ids: &[SessionId]) -> StoreResult<Vec<Versioned>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BINDS_PER_READ) {
            let mut q =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT doc, version FROM sessions WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await.map_err(backend)? {
                out.push(session_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn sessions(&self, f: &SessionFilter) -> StoreResult<Vec<Versioned>> {
        sqlx::query(
            "SELECT doc, version FROM sessions WHERE id > ?1 \
             AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR principal = ?3) \
             AND (?4 IS NULL OR target = ?4) \
             AND (?6 IS NULL OR (binding_kind = ?6 AND binding_ref = ?7)) ORDER BY id LIMIT ?5",
        )
        .bind(f.after.as_deref().unwrap_or(""))
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.principal.as_deref())
        .bind(f.target.as_deref())
        .bind(i64::from(f.limit))
        .bind(f.binding.as_ref().map(|b| b.0.as_str()))
        .bind(f.binding.as_ref().map(|b| b.1.as_str()))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(session_row)
        .collect()
    }

    async fn documents(&self, kind: &str) -> StoreResult<Vec<DocumentRecord>> {
        let rows: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT kind, name, doc, created_at FROM documents WHERE kind = ?1 ORDER BY name")
                .bind(kind)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.into_iter()
            .map(|(kind, name, doc, at)| {
                Ok(DocumentRecord {
                    kind,
                    name,
                    doc,
                    created_at: parse_time(&at)?,
                })
            })
            .collect()
    }

    async fn seen(&self, kind: &str, key: &str, now: OffsetDateTime) -> StoreResult<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM seen WHERE kind = ?1 AND key = ?2 AND expires_at > ?3")
                .bind(kind)
                .bind(key)
                .bind(now.unix_timestamp())
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        Ok(n > 0)
    }

    async fn outstanding_revocations(&self) -> StoreResult<Vec<RevocationRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REVOCATION_COLUMNS} FROM revocations WHERE state IN ('pending', 'failed') \
             ORDER BY credential"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(revocation_row)
        .collect()
    }

    async fn revoked_handles(
        &self,
        target: &str,
        kind: CredentialKind,
        unexpired_at: OffsetDateTime,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT handle FROM revocations WHERE target = ?1 AND kind = ?2 AND expires_at > ?3 \
             ORDER BY handle",
        )
        .bind(target)
        .bind(kind.as_str())
        .bind(unexpired_at.unix_timestamp())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(|(h,)| h).collect())
    }

    async fn live_sessions(&self) -> StoreResult<Vec<Versioned>> {
        sqlx::query(
            "SELECT doc, version FROM sessions \
             WHERE state IN ('requested', 'scheduled', 'active') OR needs_revocation = 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(session_row)
        .collect()
    }

    async fn live_sessions_after(
        &self,
        after: Option<&SessionId>,
        limit: u32,
    ) -> StoreResult<Vec<Versioned>> {
        sqlx::query(
            "SELECT doc, version FROM sessions \
             WHERE id > ?1 AND (state IN ('requested', 'scheduled', 'active') OR needs_revocation = 1) \
             ORDER BY id LIMIT ?2",
        )
        .bind(after.map_or("", |a| a.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(session_row)
        .collect()
    }

    async fn audit_head(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM audit")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)
    }

    async fn audit(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| audit_row(r).map_err(backend))
            .collect()
    }

    async fn audit_for_session(&self, id: &SessionId) -> StoreResult<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE session = ?1 ORDER BY seq");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| audit_row(r).map_err(backend))
            .collect()
    }

    async fn verify_audit(&self) -> StoreResult<ChainVerification> {
        // Read in pages so a long chain never sits in memory at once. Rows are read by position;
        // a row whose columns no longer decode is reported at the position it should hold.
        let anchor = self.anchor_path().and_then(|p| Anchor::read(&p));
        let mut at_anchor: Option<String> = None;
        let mut v = Verifier::new();
        let mut after = 0i64;
        loop {
            let rows = sqlx::query("SELECT * FROM audit WHERE seq > ?1 ORDER BY seq LIMIT 1000")
                .bind(after)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let seq: i64 = r.try_get("seq").unwrap_or(after + 1);
                match audit_row(r) {
                    Ok(rec) => {
                        if !v.push(&rec) {
                            return Ok(v.finish());
                        }
                        if anchor.as_ref().is_some_and(|(s, _)| *s == rec.seq) {
                            at_anchor = Some(rec.hash.clone());
                        }
                    }
                    Err(_) => {
                        v.unreadable(seq);
                        return Ok(v.finish());
                    }
                }
                after = seq;
            }
        }
        let mut out = v.finish();
        if let Some((seq, hash)) = anchor {
            if seq > after {
                out.ok = false;
                out.first_bad_seq = Some(after + 1);
                out.problem = Some(format!(
                    "the chain ends at seq {after} but its head file records seq {seq}: events were removed"
                ));
            } else if at_anchor.as_deref() != Some(hash.as_str()) {
                out.ok = false;
                out.first_bad_seq = Some(seq);
                out.problem = Some("event differs from the head file's record of it".to_owned());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
