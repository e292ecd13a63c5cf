-- Budget leases whose holder died are settled by another instance (issue 21), not left
-- reserved until they expire:
-- - a lease's reservation names the instance holding it (`holder`; NULL for a request's own
--   reservation);
-- - every running instance writes a heartbeat into `runtime_instances` (platform data: no
--   tenant, so no row-level security; the serving role has no privilege on the table and
--   reaches it only through the two functions below), and removes it at a clean shutdown;
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

-- The grants of the serving role, now with these three functions (the overview totals
-- migration's version plus them).
CREATE OR REPLACE FUNCTION stratai_grant_app_role(p_role TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    t TEXT;
    f TEXT;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', p_role);
    FOREACH t IN ARRAY ARRAY['users', 'user_profiles'] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO %I', t, p_role);
    END LOOP;
    FOREACH t IN ARRAY ARRAY[
        'model_tiers', 'tier_models', 'organizations', 'org_memberships', 'groups',
        'group_memberships', 'org_tier_access', 'guardrails', 'usage_records', 'budgets',
        'budget_periods', 'budget_reservations', 'budget_reservation_items', 'invoices',
        'invitations', 'outbox_versions', 'litellm_key_vault', 'usage_hourly'
    ] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO %I', t, p_role);
    END LOOP;
    -- the outbox is written by tenants and read only through the platform functions
    EXECUTE format('GRANT INSERT ON outbox TO %I', p_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO %I', p_role);
    FOREACH f IN ARRAY ARRAY[
        'stratai_list_orgs()', 'stratai_find_org_by_slug(text)',
        'stratai_memberships_of_user(uuid)', 'stratai_locate_group(uuid)',
        'stratai_find_invitation(text)', 'stratai_outbox_pending(timestamptz, integer)',
        'stratai_outbox_complete(bigint)', 'stratai_outbox_fail(bigint, text, timestamptz)',
        'stratai_outbox_dead_letter(bigint, text)', 'stratai_outbox_dead_letters(integer)',
        'stratai_reclaim_expired(timestamptz)',
        'stratai_put_platform_rule(uuid, text, text, text, jsonb, text, uuid, text, integer, boolean, timestamptz)',
        'stratai_delete_platform_rule(uuid)',
        'stratai_delete_profile(uuid)', 'stratai_pending_invitations(text)',
        'stratai_usage_totals_by_org(timestamptz, timestamptz)',
        'stratai_count_people_in_orgs()',
        'stratai_instance_beat(uuid, timestamptz)', 'stratai_instance_retire(uuid)',
        'stratai_abandoned_leases(timestamptz, integer)'
    ] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
    END LOOP;
END
$$;
