-- The audit trail (stratai-core's `audit`): every change made through the admin API or the
-- UI, hash-chained per organization (`chain_id` = the organization's id) and in one platform
-- chain (`chain_id` = the nil uuid, no organization). `audit_heads` keeps each chain's newest
-- entry, written in the appending transaction (its row lock serializes appends to a chain),
-- so removing the newest entries is found too.
--
-- A tenant table: RLS enabled and forced, the tenant policy for an organization's chain; the
-- platform chain's rows (no organization) are visible to every session of the app role, which
-- serves them to operators only. Operators read every chain through `stratai_audit_all`.
-- Append-only for the app role: SELECT and INSERT granted, UPDATE, DELETE and TRUNCATE
-- revoked (stratai_grant_audit), and triggers refuse them for every role, the owner too.

CREATE TABLE audit_log (
    chain_id UUID NOT NULL,
    organization_id UUID REFERENCES organizations(id),
    seq BIGINT NOT NULL CHECK (seq >= 1),
    at TIMESTAMPTZ NOT NULL,
    actor_id UUID,
    request_id TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    -- canonical JSON text (not JSONB, which would re-encode it), hashed as stored
    before_state TEXT,
    after_state TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain_id, seq),
    CHECK (chain_id = COALESCE(organization_id, '00000000-0000-0000-0000-000000000000'::uuid))
);
CREATE INDEX idx_audit_log_at ON audit_log(at, chain_id, seq);
CREATE INDEX idx_audit_log_request ON audit_log(request_id);

CREATE TABLE audit_heads (
    chain_id UUID PRIMARY KEY,
    organization_id UUID REFERENCES organizations(id),
    seq BIGINT NOT NULL CHECK (seq >= 0),
    hash TEXT NOT NULL,
    CHECK (chain_id = COALESCE(organization_id, '00000000-0000-0000-0000-000000000000'::uuid))
);

DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_log', 'audit_heads'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR ALL '
            'USING (organization_id = NULLIF(current_setting(''app.current_org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.current_org_id'', true), '''')::uuid)',
            t);
        EXECUTE format(
            'CREATE POLICY platform_chain ON %I FOR ALL '
            'USING (organization_id IS NULL) WITH CHECK (organization_id IS NULL)', t);
    END LOOP;
END
$$;

-- What stratai_audit_all reads (the owner; the app role has no such policy).
CREATE POLICY platform_read ON audit_log FOR SELECT TO CURRENT_USER USING (true);

CREATE FUNCTION stratai_audit_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION stratai_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION stratai_audit_append_only();
CREATE TRIGGER audit_heads_kept BEFORE DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION stratai_audit_append_only();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION stratai_audit_append_only();

CREATE FUNCTION stratai_audit_head_forward() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.chain_id IS DISTINCT FROM OLD.chain_id
       OR NEW.organization_id IS DISTINCT FROM OLD.organization_id
       OR NEW.seq <> OLD.seq + 1 THEN
        RAISE EXCEPTION 'an audit chain head only moves forward one entry'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_heads_forward BEFORE UPDATE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION stratai_audit_head_forward();

-- Operators: the entries of every chain, newest first (time, chain, seq), filtered and paged
-- by the keyset of the previous page's last entry.
CREATE FUNCTION stratai_audit_all(
    p_actor UUID, p_action TEXT, p_target TEXT, p_request TEXT, p_since TIMESTAMPTZ,
    p_until TIMESTAMPTZ, p_before_at TIMESTAMPTZ, p_before_chain UUID, p_before_seq BIGINT,
    p_limit INTEGER
) RETURNS SETOF audit_log
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM audit_log
    WHERE (p_actor IS NULL OR actor_id = p_actor)
      AND (p_action IS NULL OR starts_with(action, p_action))
      AND (p_target IS NULL OR starts_with(target, p_target))
      AND (p_request IS NULL OR request_id = p_request)
      AND (p_since IS NULL OR at >= p_since)
      AND (p_until IS NULL OR at < p_until)
      AND (p_before_at IS NULL OR (at, chain_id, seq) < (p_before_at, p_before_chain, p_before_seq))
    ORDER BY at DESC, chain_id DESC, seq DESC
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION stratai_audit_all(uuid, text, text, text, timestamptz, timestamptz, timestamptz, uuid, bigint, integer) FROM PUBLIC;

-- The app role's privileges on the audit tables (PgStore::setup_app_role and grant_app_role
-- run it after stratai_grant_app_role): entries are read and appended, never changed.
CREATE FUNCTION stratai_grant_audit(p_role TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON audit_log TO %I', p_role);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %I', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON audit_heads TO %I', p_role);
    EXECUTE format('REVOKE DELETE, TRUNCATE ON audit_heads FROM %I', p_role);
    EXECUTE format(
        'GRANT EXECUTE ON FUNCTION stratai_audit_all(uuid, text, text, text, timestamptz, '
        'timestamptz, timestamptz, uuid, bigint, integer) TO %I', p_role);
END
$$;
REVOKE ALL ON FUNCTION stratai_grant_audit(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION stratai_audit_append_only() FROM PUBLIC;
REVOKE ALL ON FUNCTION stratai_audit_head_forward() FROM PUBLIC;
