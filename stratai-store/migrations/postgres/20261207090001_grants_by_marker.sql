-- The serving role's EXECUTE grants, read from the catalog instead of restated. Until now every
-- migration that added a platform function restated `stratai_grant_app_role` with one more
-- name in its list. From here on a platform function the serving role may call carries the
-- marker comment below, and the grant function grants EXECUTE on exactly the functions that
-- carry it (opt-in: an owner-only function, e.g. the grant functions themselves or a trigger
-- function, has no marker and is never granted). A later migration adds its function and one
-- `COMMENT ON FUNCTION ... IS 'stratai: serving role'` line.

DO $$
DECLARE
    f TEXT;
BEGIN
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
        -- granted by stratai_grant_audit as well (the audit migration's own grant function)
        'stratai_audit_all(uuid, text, text, text, timestamptz, timestamptz, timestamptz, uuid, bigint, integer)'
    ] LOOP
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', f, 'stratai: serving role');
    END LOOP;
END
$$;

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
    -- every platform function marked for the serving role, and no other
    FOR f IN
        SELECT p.oid::regprocedure::text
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'
          AND obj_description(p.oid, 'pg_proc') = 'stratai: serving role'
        ORDER BY 1
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
    END LOOP;
END
$$;
