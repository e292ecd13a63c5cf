-- The platform overview in two reads instead of two per organization: every organization's
-- usage totals over a time window, and how many people are members anywhere. Usage rows and
-- memberships are tenant rows under RLS, so these are platform functions (security definer,
-- granted to the serving role; the server calls them for platform operators only).
--
-- The totals are exact for any window: the hourly rollup's whole hours inside it, plus the
-- records of the partial hours at either end (none when both ends are whole hours, as the
-- overview's UTC month is). Read per organization (a lateral join), so each part uses its
-- (organization_id, hour) or (organization_id, created_at) index.

-- The owner role (running this migration, owning the functions) may read usage for them, as
-- the schema's platform paths read organizations and memberships; the app role may not.
CREATE POLICY platform_read ON usage_hourly FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY platform_read ON usage_records FOR SELECT TO CURRENT_USER USING (true);

CREATE FUNCTION stratai_usage_totals_by_org(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ)
RETURNS TABLE (organization_id UUID, requests BIGINT, input_tokens BIGINT,
    output_tokens BIGINT, provider_cost NUMERIC, billed_amount NUMERIC)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH edges AS (
        -- h1: the first whole hour at or after p_from; h2: the hour p_to falls in.
        SELECT CASE WHEN f = p_from THEN f ELSE f + interval '1 hour' END AS h1,
               date_trunc('hour', p_to AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS h2
        FROM (SELECT date_trunc('hour', p_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS f) s
    ), parts AS (
        -- Whole hours [h1, h2) from the rollup, records in [p_from, h1) and [h2, p_to); when
        -- no whole hour fits, the records of [p_from, p_to).
        SELECT h1, h2,
               CASE WHEN h1 < h2 THEN h1 ELSE p_to END AS head_end,
               CASE WHEN h1 < h2 THEN h2 ELSE p_to END AS tail_start
        FROM edges
    )
    SELECT o.id, t.requests, t.input_tokens, t.output_tokens, t.provider_cost, t.billed_amount
    FROM organizations o CROSS JOIN parts p
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(u.requests), 0)::int8 AS requests,
               coalesce(sum(u.input_tokens), 0)::int8 AS input_tokens,
               coalesce(sum(u.output_tokens), 0)::int8 AS output_tokens,
               coalesce(sum(u.provider_cost), 0) AS provider_cost,
               coalesce(sum(u.billed_amount), 0) AS billed_amount
        FROM (
            SELECT h.requests, h.input_tokens, h.output_tokens, h.provider_cost, h.billed_amount
            FROM usage_hourly h
            WHERE h.organization_id = o.id AND h.hour >= p.h1 AND h.hour < p.h2
            UNION ALL
            SELECT 1, r.input_tokens, r.output_tokens, r.provider_cost, r.billed_amount
            FROM usage_records r
            WHERE r.organization_id = o.id AND r.created_at >= p_from
              AND r.created_at < p.head_end
            UNION ALL
            SELECT 1, r.input_tokens, r.output_tokens, r.provider_cost, r.billed_amount
            FROM usage_records r
            WHERE r.organization_id = o.id AND r.created_at >= p.tail_start
              AND r.created_at < p_to
        ) u
    ) t
    WHERE t.requests > 0
    ORDER BY o.id
$$;
REVOKE ALL ON FUNCTION stratai_usage_totals_by_org(timestamptz, timestamptz) FROM PUBLIC;

CREATE FUNCTION stratai_count_people_in_orgs() RETURNS BIGINT
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT count(DISTINCT user_id) FROM org_memberships
$$;
REVOKE ALL ON FUNCTION stratai_count_people_in_orgs() FROM PUBLIC;

-- The grants of the serving role, now with these two functions (the pending invitations
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
        'stratai_count_people_in_orgs()'
    ] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
    END LOOP;
END
$$;
