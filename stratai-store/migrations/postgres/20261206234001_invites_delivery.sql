-- Invitations are emailed: each keeps the record of its email (queued, sent, failed or
-- skipped; attempts; the last failure). Invitations made before this were never emailed.
ALTER TABLE invitations
    ADD COLUMN delivery_status TEXT NOT NULL DEFAULT 'skipped'
        CHECK (delivery_status IN ('queued', 'sent', 'failed', 'skipped')),
    ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0 CHECK (delivery_attempts >= 0),
    ADD COLUMN delivery_error TEXT,
    ADD COLUMN delivery_attempted_at TIMESTAMPTZ;

-- One pending invitation per address per organization (addresses are stored normalized,
-- lowercase): inviting again renews it. Older duplicates are revoked first (ids are UUIDv7,
-- so the larger id is the newer invitation). The table's row-level security policy is
-- unchanged: the new columns are the invitation's own.
UPDATE invitations SET status = 'revoked'
WHERE status = 'pending' AND EXISTS (
    SELECT 1 FROM invitations AS newer
    WHERE newer.organization_id = invitations.organization_id
      AND newer.email = invitations.email
      AND newer.status = 'pending'
      AND newer.id > invitations.id
);
CREATE UNIQUE INDEX invitations_organization_id_email_key
    ON invitations (organization_id, email) WHERE status = 'pending';
