-- The revocation outbox and ledger for credentials that live in external systems (postgres roles,
-- ssh certificates). Rows are derived from the session document in the same transaction that
-- writes it, so ending a session and queueing its revocation jobs are one atomic step. JWTs are
-- revoked in memory before their session's commit and need no row.
CREATE TABLE revocations (
    credential TEXT PRIMARY KEY,
    session    TEXT NOT NULL,
    target     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    handle     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX revocations_outstanding ON revocations (state) WHERE state IN ('pending', 'failed');
CREATE INDEX revocations_by_target ON revocations (target, kind, expires_at);
