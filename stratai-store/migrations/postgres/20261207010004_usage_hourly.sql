-- A rollup of usage per organization and UTC hour (PostgreSQL only: an index-like
-- materialization of `usage_records`, never written by the application). Totals over whole
-- hours (an organization's month, the platform overview, a day chart in UTC) read a few hundred
-- rollup rows instead of every record. Statement-level triggers with transition tables keep it
-- exact: each INSERT into usage_records adds its hours' totals (only the rows really inserted:
-- the duplicates ON CONFLICT DO NOTHING skips are not in the transition table), keys in order
-- so concurrent appends lock rollup rows in one order. Records are append-only in the
-- application; should some ever be deleted or changed (an operator's SQL, a retention job),
-- their hours are taken out (and the new values put in).
-- A tenant table like the others: RLS enabled and forced with the tenant policy; the triggers
-- run as the appending role, inside its tenant. No CHECK constraints: a removal is an upsert of
-- negative totals.

CREATE TABLE usage_hourly (
    organization_id UUID NOT NULL REFERENCES organizations(id),
    hour TIMESTAMPTZ NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    provider_cost NUMERIC NOT NULL,
    billed_amount NUMERIC NOT NULL,
    PRIMARY KEY (organization_id, hour)
);

ALTER TABLE usage_hourly ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_hourly FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_hourly FOR ALL
    USING (organization_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid);

CREATE FUNCTION stratai_usage_hourly_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO usage_hourly AS h (organization_id, hour, requests, input_tokens,
        output_tokens, provider_cost, billed_amount)
    SELECT organization_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), sum(input_tokens), sum(output_tokens), sum(provider_cost),
           sum(billed_amount)
    FROM new_records
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (organization_id, hour) DO UPDATE SET
        requests = h.requests + EXCLUDED.requests,
        input_tokens = h.input_tokens + EXCLUDED.input_tokens,
        output_tokens = h.output_tokens + EXCLUDED.output_tokens,
        provider_cost = h.provider_cost + EXCLUDED.provider_cost,
        billed_amount = h.billed_amount + EXCLUDED.billed_amount;
    RETURN NULL;
END
$$;

CREATE FUNCTION stratai_usage_hourly_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO usage_hourly AS h (organization_id, hour, requests, input_tokens,
        output_tokens, provider_cost, billed_amount)
    SELECT organization_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           -count(*), -sum(input_tokens), -sum(output_tokens), -sum(provider_cost),
           -sum(billed_amount)
    FROM old_records
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (organization_id, hour) DO UPDATE SET
        requests = h.requests + EXCLUDED.requests,
        input_tokens = h.input_tokens + EXCLUDED.input_tokens,
        output_tokens = h.output_tokens + EXCLUDED.output_tokens,
        provider_cost = h.provider_cost + EXCLUDED.provider_cost,
        billed_amount = h.billed_amount + EXCLUDED.billed_amount;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_hourly_insert AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_records
    FOR EACH STATEMENT EXECUTE FUNCTION stratai_usage_hourly_insert();
CREATE TRIGGER usage_hourly_delete AFTER DELETE ON usage_records
    REFERENCING OLD TABLE AS old_records
    FOR EACH STATEMENT EXECUTE FUNCTION stratai_usage_hourly_delete();
-- An update is its old rows out and its new rows in.
CREATE TRIGGER usage_hourly_update_out AFTER UPDATE ON usage_records
    REFERENCING OLD TABLE AS old_records
    FOR EACH STATEMENT EXECUTE FUNCTION stratai_usage_hourly_delete();
CREATE TRIGGER usage_hourly_update_in AFTER UPDATE ON usage_records
    REFERENCING NEW TABLE AS new_records
    FOR EACH STATEMENT EXECUTE FUNCTION stratai_usage_hourly_insert();

-- Trigger functions are not called by the app role directly.
REVOKE ALL ON FUNCTION stratai_usage_hourly_insert() FROM PUBLIC;
REVOKE ALL ON FUNCTION stratai_usage_hourly_delete() FROM PUBLIC;

-- The records already stored (the owner runs migrations; RLS is lifted for the backfill only,
-- inside this migration's transaction).
ALTER TABLE usage_records NO FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_hourly NO FORCE ROW LEVEL SECURITY;
INSERT INTO usage_hourly (organization_id, hour, requests, input_tokens, output_tokens,
    provider_cost, billed_amount)
SELECT organization_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*), sum(input_tokens), sum(output_tokens), sum(provider_cost), sum(billed_amount)
FROM usage_records
GROUP BY 1, 2;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_hourly FORCE ROW LEVEL SECURITY;

-- The grants of the serving role, now with the rollup (the body of the key-vault migration's
-- version plus `usage_hourly`; CREATE OR REPLACE keeps the owner and the revoked PUBLIC execute).
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
        'stratai_delete_profile(uuid)'
    ] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
    END LOOP;
END
$$;
