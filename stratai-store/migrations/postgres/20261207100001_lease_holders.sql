-- Budget leases whose holder died are settled by another instance (issue 21), not left
-- reserved until they expire:
-- - a lease's reservation names the instance holding it (`holder`; NULL for a request's own
--   reservation);
-- - every running instance writes a heartbeat into `runtime_instances` (platform data: no
--   tenant, so no row-level security; the serving role has no privilege on the table and
--   reaches it only through the two functions below, marked for it), and removes it at a
--   clean shutdown;
-- - a usage record names the lease it was admitted under (`lease_id`), so the lease is
--   settled from its records, under the tenant's own context, by the ledger's usual
--   settlement (one transaction, conditional on the reservation's status).
-- Finding the abandoned leases crosses tenants, so it is a platform function too, reading
-- reservations through the owner's `platform_reclaim` policies (as stratai_reclaim_expired).

ALTER TABLE budget_reservations ADD COLUMN holder UUID;
CREATE INDEX idx_budget_reservations_held ON budget_reservations (holder)
    WHERE status = 'active' AND holder IS NOT NULL;

ALTER TABLE usage_records ADD COLUMN lease_id UUID;
CREATE INDEX idx_usage_records_lease ON usage_records (organization_id, lease_id)
    WHERE lease_id IS NOT NULL;

CREATE TABLE runtime_instances (
    id UUID PRIMARY KEY,
    beat_at TIMESTAMPTZ NOT NULL
);
REVOKE ALL ON TABLE runtime_instances FROM PUBLIC;

CREATE FUNCTION stratai_instance_beat(p_instance UUID, p_at TIMESTAMPTZ) RETURNS VOID
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    INSERT INTO runtime_instances (id, beat_at) VALUES (p_instance, p_at)
    ON CONFLICT (id) DO UPDATE SET beat_at = EXCLUDED.beat_at
$$;
REVOKE ALL ON FUNCTION stratai_instance_beat(uuid, timestamptz) FROM PUBLIC;

CREATE FUNCTION stratai_instance_retire(p_instance UUID) RETURNS VOID
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    DELETE FROM runtime_instances WHERE id = p_instance
$$;
REVOKE ALL ON FUNCTION stratai_instance_retire(uuid) FROM PUBLIC;

-- Active reservations held by an instance whose heartbeat is older than p_dead_before, or
-- missing; oldest first, at most p_limit, each with its budgets in id order.
CREATE FUNCTION stratai_abandoned_leases(p_dead_before TIMESTAMPTZ, p_limit INTEGER)
RETURNS TABLE (o_org UUID, o_request UUID, o_holder UUID, o_created TIMESTAMPTZ,
    o_budgets UUID[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT r.organization_id, r.request_id, r.holder, r.created_at,
           ARRAY(SELECT i.budget_id FROM budget_reservation_items i
                 WHERE i.organization_id = r.organization_id AND i.request_id = r.request_id
                 ORDER BY i.budget_id)
    FROM budget_reservations r
    LEFT JOIN runtime_instances h ON h.id = r.holder
    WHERE r.status = 'active' AND r.holder IS NOT NULL
      AND (h.id IS NULL OR h.beat_at < p_dead_before)
    ORDER BY r.created_at, r.request_id
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION stratai_abandoned_leases(timestamptz, integer) FROM PUBLIC;

-- The serving role may call the three (granted by stratai_grant_app_role from the catalog).
COMMENT ON FUNCTION stratai_instance_beat(uuid, timestamptz) IS 'stratai: serving role';
COMMENT ON FUNCTION stratai_instance_retire(uuid) IS 'stratai: serving role';
COMMENT ON FUNCTION stratai_abandoned_leases(timestamptz, integer) IS 'stratai: serving role';
