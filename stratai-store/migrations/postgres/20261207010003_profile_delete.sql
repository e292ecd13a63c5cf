-- Deleting a user profile (DELETE /api/profiles/{id}). Profiles are platform rows, but who
-- uses one is tenant data (org_memberships, invitations under row-level security), so the
-- check and the delete run in one narrow SECURITY DEFINER function: a profile given to a
-- member or named by a pending invitation is kept (the caller answers 409 with the counts);
-- otherwise invitations no longer pending forget it and it is deleted.

-- The owner may clear the profile of invitations that are no longer pending, nothing else.
CREATE POLICY platform_profile_clear ON invitations FOR UPDATE TO CURRENT_USER
    USING (status <> 'pending') WITH CHECK (status <> 'pending');

CREATE FUNCTION stratai_delete_profile(p_id UUID)
RETURNS TABLE (known BOOLEAN, member_count BIGINT, pending_count BIGINT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_members BIGINT;
    v_pending BIGINT;
BEGIN
    PERFORM 1 FROM user_profiles WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, 0::BIGINT, 0::BIGINT;
        RETURN;
    END IF;
    SELECT count(*) INTO v_members FROM org_memberships WHERE profile_id = p_id;
    SELECT count(*) INTO v_pending FROM invitations WHERE profile_id = p_id AND status = 'pending';
    IF v_members = 0 AND v_pending = 0 THEN
        UPDATE invitations SET profile_id = NULL WHERE profile_id = p_id AND status <> 'pending';
        DELETE FROM user_profiles WHERE id = p_id;
    END IF;
    RETURN QUERY SELECT true, v_members, v_pending;
END
$$;
REVOKE ALL ON FUNCTION stratai_delete_profile(uuid) FROM PUBLIC;

-- Roles already granted (they can run the other platform functions) get this one now;
-- roles set up later get it from stratai_grant_app_role below.
DO $$
DECLARE
    r TEXT;
BEGIN
    FOR r IN
        SELECT DISTINCT grantee FROM information_schema.routine_privileges
        WHERE routine_name = 'stratai_delete_platform_rule' AND privilege_type = 'EXECUTE'
          AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION stratai_delete_profile(uuid) TO %I', r);
    END LOOP;
END
$$;

-- The grants of the serving role, now with `stratai_delete_profile` (same body as in the
-- key vault migration plus that function; CREATE OR REPLACE keeps the owner).
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
        'invitations', 'outbox_versions', 'litellm_key_vault'
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
        'stratai_delete_profile(uuid)'
    ] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
    END LOOP;
END
$$;
