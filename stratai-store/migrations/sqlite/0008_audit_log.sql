-- The audit trail (stratai-core's `audit`): every change made through the admin API or the
-- UI, hash-chained per organization (`chain_id` = the organization's id) and in one platform
-- chain (`chain_id` = the nil uuid, no organization). `audit_heads` keeps each chain's newest
-- entry, written in the appending transaction, so removing the newest entries is found too.
-- Append-only: the triggers refuse every UPDATE and DELETE of an entry, and a head only moves
-- forward one entry at a time.

CREATE TABLE audit_log (
    chain_id BLOB NOT NULL,
    organization_id BLOB REFERENCES organizations(id),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    at TEXT NOT NULL,
    actor_id BLOB,
    request_id TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    -- canonical JSON text, hashed as stored
    before_state TEXT,
    after_state TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
-- the newest-first listings and their keyset (at, chain, seq)
CREATE INDEX idx_audit_log_at ON audit_log(at, chain_id, seq);
CREATE INDEX idx_audit_log_request ON audit_log(request_id);

CREATE TABLE audit_heads (
    chain_id BLOB PRIMARY KEY,
    organization_id BLOB REFERENCES organizations(id),
    seq INTEGER NOT NULL CHECK (seq >= 0),
    hash TEXT NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_heads_move_forward BEFORE UPDATE ON audit_heads
WHEN NEW.chain_id IS NOT OLD.chain_id OR NEW.seq <> OLD.seq + 1
BEGIN
    SELECT RAISE(ABORT, 'an audit chain head only moves forward one entry');
END;

CREATE TRIGGER audit_heads_kept BEFORE DELETE ON audit_heads
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
