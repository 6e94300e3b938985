-- Sessions are found by the activity they are bound to (hooks end every session bound to a ref;
-- token exchange reuses the session of a pipeline run).
ALTER TABLE sessions ADD COLUMN binding_kind TEXT;
ALTER TABLE sessions ADD COLUMN binding_ref TEXT;
UPDATE sessions SET binding_kind = json_extract(doc, '$.binding.kind'),
                    binding_ref = json_extract(doc, '$.binding.ref');
CREATE INDEX sessions_by_binding ON sessions (binding_kind, binding_ref) WHERE binding_ref IS NOT NULL;

-- Small named configuration documents: workload trusts, hook sources.
CREATE TABLE documents (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    doc        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);

-- Replay guards, written in the same transaction as what they guard: ID token `jti`s, hook event
-- ids, refs that received a closing event. A second insert of the same key fails the batch.
CREATE TABLE seen (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
