-- stint's embedded store. Never edit a released migration; add a new one.
CREATE TABLE principals (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    key_hash    TEXT UNIQUE,
    created_at  TEXT NOT NULL,
    deleted_at  TEXT
);

CREATE TABLE targets (
    name       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    doc        TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    principal        TEXT NOT NULL,
    target           TEXT NOT NULL,
    state            TEXT NOT NULL,
    needs_revocation INTEGER NOT NULL DEFAULT 0,
    version          INTEGER NOT NULL,
    doc              TEXT NOT NULL
);
CREATE INDEX sessions_by_state ON sessions (state);
CREATE INDEX sessions_by_principal ON sessions (principal, id);
CREATE INDEX sessions_by_target ON sessions (target, id);

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    session   TEXT,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_by_session ON audit (session, seq);
