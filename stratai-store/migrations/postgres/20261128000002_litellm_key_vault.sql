-- Sealed LiteLLM virtual-key secrets (stratai-litellm's encrypted key vault; port
-- `KeyVaultStore`). LiteLLM shows a key's secret only once, so the sync keeps it here, sealed
-- (XChaCha20-Poly1305 under a master key the database never sees, bound to the organization,
-- the user and the key id), shared by the server and the worker and kept across restarts.
-- A tenant table like the others: one row per membership (removing the member removes it),
-- row-level security enabled and forced with the tenant policy, DML granted to the app role.

CREATE TABLE litellm_key_vault (
    organization_id UUID NOT NULL,
    user_id UUID NOT NULL,
    -- LiteLLM's id of the key (token hash), as in org_memberships.virtual_key_id
    key_id TEXT NOT NULL,
    -- opaque sealed secret
    sealed BYTEA NOT NULL,
    sealed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, user_id),
    FOREIGN KEY (organization_id, user_id)
        REFERENCES org_memberships(organization_id, user_id) ON DELETE CASCADE
);

ALTER TABLE litellm_key_vault ENABLE ROW LEVEL SECURITY;
ALTER TABLE litellm_key_vault FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON litellm_key_vault FOR ALL
    USING (organization_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid);

-- The grants of the serving role, now with the vault table (same body as in the schema
-- migration plus `litellm_key_vault`; CREATE OR REPLACE keeps the owner and the revoked
-- PUBLIC execute).
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
        'stratai_delete_platform_rule(uuid)'
    ] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
    END LOOP;
END
$$;
