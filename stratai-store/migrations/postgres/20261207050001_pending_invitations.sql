-- A sign-in joins the pending invitations addressed to the person's email in every
-- organization. One indexed read through a platform function (invitations are tenant rows
-- under RLS; like `stratai_find_invitation`, the function returns only what its argument
-- names), instead of one read per organization.

CREATE INDEX idx_invitations_pending_email ON invitations (email) WHERE status = 'pending';

CREATE FUNCTION stratai_pending_invitations(p_email TEXT) RETURNS SETOF invitations
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM invitations WHERE email = p_email AND status = 'pending'
$$;
REVOKE ALL ON FUNCTION stratai_pending_invitations(text) FROM PUBLIC;

-- The grants of the serving role, now with `stratai_pending_invitations` (the rollup
-- migration's version plus that function).
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
        'stratai_delete_profile(uuid)', 'stratai_pending_invitations(text)'
    ] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
    END LOOP;
END
$$;
