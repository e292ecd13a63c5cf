-- Budget leases whose holder died are settled by another instance (issue 21): a lease's
-- reservation names the instance holding it, each instance writes a heartbeat, and a usage
-- record names the lease it was admitted under, so the lease is settled from its records.
ALTER TABLE budget_reservations ADD COLUMN holder BLOB;
CREATE INDEX idx_reservations_held ON budget_reservations (holder)
    WHERE status = 'active' AND holder IS NOT NULL;

ALTER TABLE usage_records ADD COLUMN lease_id BLOB;
CREATE INDEX idx_usage_records_lease ON usage_records (organization_id, lease_id)
    WHERE lease_id IS NOT NULL;

-- One row per running instance: its last heartbeat (removed at a clean shutdown).
CREATE TABLE runtime_instances (
    id BLOB PRIMARY KEY NOT NULL,
    beat_at TEXT NOT NULL
);
