-- StratAI PostgreSQL schema: the seed's enterprise schema, adapted to the domain in
-- stratai-core, plus the budget ledger (periods, reservations, settlements, alert state) and
-- the LiteLLM sync outbox. Runs as the OWNER role (see stratai-store/README.md); the serving
-- role owns nothing and is granted DML by `stratai_grant_app_role`.
--
-- Deviations from the seed, on purpose:
-- * money is unconstrained NUMERIC (checked >= 0): a ledger that rounds to cents cannot make
--   "spent == sum of settled amounts" hold exactly for sub-cent request costs;
-- * every tenant table carries organization_id (group_memberships, budget_* and outbox too),
--   and cross-table references inside a tenant are composite foreign keys
--   (organization_id, id), so a row can never point into another tenant;
-- * users.auth0_id is `oidc_subject` (any OIDC provider); invitations keep only `token_hash`
--   (SHA-256 of the token), never the token; org_memberships keep the LiteLLM key id, never
--   the virtual key itself;
-- * budgets keep the definition; the per-period state the seed kept inline
--   (current_usage, period_start/end, alert_sent) lives in budget_periods, one row per
--   budget and calendar window, so a new period starts at zero with no reset job;
-- * usage_records are keyed by (organization_id, request_id) (the idempotency key) and only
--   reference organizations: usage is a ledger of facts that outlives deleted groups/tiers.

-- ============================================================
-- PLATFORM TABLES (no organization_id, no row-level security)
-- Identities, profiles and the tier catalog are platform-wide by design: a user belongs to
-- several organizations, profiles and tiers are templates every organization uses. The app
-- role reads and writes them directly; it cannot delete users or profiles.
-- ============================================================

CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email TEXT NOT NULL UNIQUE,
    name TEXT,
    avatar_url TEXT,
    oidc_subject TEXT UNIQUE,
    platform_role TEXT NOT NULL DEFAULT 'user' CHECK (platform_role IN ('super_admin', 'user')),
    is_active BOOLEAN NOT NULL DEFAULT true,
    last_login_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE user_profiles (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    description TEXT,
    default_tiers TEXT[] NOT NULL DEFAULT ARRAY['basic'],
    default_guardrails JSONB NOT NULL DEFAULT '[]',
    available_to TEXT NOT NULL DEFAULT 'all' CHECK (available_to IN ('all', 'internal', 'enterprise')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE model_tiers (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    best_use_case TEXT NOT NULL DEFAULT '',
    base_price NUMERIC NOT NULL DEFAULT 0 CHECK (base_price >= 0),
    input_token_rate NUMERIC NOT NULL DEFAULT 0 CHECK (input_token_rate >= 0),
    output_token_rate NUMERIC NOT NULL DEFAULT 0 CHECK (output_token_rate >= 0),
    models TEXT[] NOT NULL,
    sort_order INTEGER NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A model belongs to at most one tier: the primary key enforces it under concurrency.
CREATE TABLE tier_models (
    model TEXT PRIMARY KEY,
    tier_id UUID NOT NULL REFERENCES model_tiers(id) ON DELETE CASCADE
);
CREATE INDEX idx_tier_models_tier ON tier_models(tier_id);

-- ============================================================
-- MULTI-TENANCY
-- ============================================================

CREATE TABLE organizations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    litellm_org_id TEXT UNIQUE,
    settings JSONB NOT NULL DEFAULT '{
        "allowed_tiers": ["basic", "standard"],
        "default_tier": "standard",
        "max_users_per_group": 100,
        "require_mfa": false
    }',
    billing_email TEXT,
    billing_plan TEXT NOT NULL DEFAULT 'trial' CHECK (
        billing_plan IN ('trial', 'starter', 'business', 'enterprise')
    ),
    stripe_customer_id TEXT,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE org_memberships (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    virtual_key_id TEXT,
    profile_id UUID REFERENCES user_profiles(id),
    -- NULL: no member-level restriction (the organization's tiers apply)
    allowed_tiers TEXT[],
    monthly_budget NUMERIC CHECK (monthly_budget >= 0),
    joined_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (organization_id, user_id)
);

CREATE TABLE groups (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    litellm_team_id TEXT,
    allowed_tiers TEXT[],
    monthly_budget NUMERIC CHECK (monthly_budget >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name),
    UNIQUE (organization_id, id)
);

CREATE TABLE group_memberships (
    organization_id UUID NOT NULL,
    group_id UUID NOT NULL,
    user_id UUID NOT NULL,
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('lead', 'member')),
    joined_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id),
    -- the group and the member must both be of this organization; removing either removes
    -- the group membership
    FOREIGN KEY (organization_id, group_id)
        REFERENCES groups(organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, user_id)
        REFERENCES org_memberships(organization_id, user_id) ON DELETE CASCADE
);

CREATE TABLE org_tier_access (
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    tier_id UUID NOT NULL REFERENCES model_tiers(id) ON DELETE CASCADE,
    enabled BOOLEAN NOT NULL DEFAULT true,
    monthly_budget NUMERIC CHECK (monthly_budget >= 0),
    enabled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, tier_id)
);

-- ============================================================
-- GUARDRAILS
-- organization_id NULL: a platform rule (global, or a tier rule of the platform). Platform
-- rules are readable by every tenant (they apply to everyone) and written only through the
-- SECURITY DEFINER functions below.
-- ============================================================

CREATE TABLE guardrails (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    type TEXT NOT NULL CHECK (type IN (
        'model_allowlist', 'model_denylist', 'token_limit',
        'rate_limit', 'content_filter', 'output_modifier',
        'budget_limit', 'time_restriction'
    )),
    config JSONB NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('global', 'org', 'tier', 'group', 'user')),
    scope_id UUID,
    action TEXT NOT NULL DEFAULT 'block' CHECK (action IN ('block', 'warn', 'modify', 'log')),
    priority INTEGER NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (
        (level = 'global' AND organization_id IS NULL AND scope_id IS NULL)
        OR (level = 'tier' AND scope_id IS NOT NULL)
        OR (level IN ('org', 'group', 'user') AND organization_id IS NOT NULL AND scope_id IS NOT NULL)
    )
);

-- ============================================================
-- USAGE & BILLING
-- ============================================================

CREATE TABLE usage_records (
    organization_id UUID NOT NULL REFERENCES organizations(id),
    request_id UUID NOT NULL,
    group_id UUID,
    user_id UUID NOT NULL,
    tier_id UUID,
    model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL CHECK (input_tokens >= 0),
    output_tokens BIGINT NOT NULL CHECK (output_tokens >= 0),
    provider_cost NUMERIC NOT NULL CHECK (provider_cost >= 0),
    billed_amount NUMERIC NOT NULL CHECK (billed_amount >= 0),
    litellm_request_id TEXT,
    conversation_id UUID,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('success', 'partial', 'failed')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, request_id)
);

CREATE TABLE budgets (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    scope_type TEXT NOT NULL CHECK (scope_type IN ('org', 'group', 'user', 'tier')),
    -- the organization itself for scope_type 'org'
    scope_id UUID NOT NULL,
    limit_amount NUMERIC NOT NULL CHECK (limit_amount >= 0),
    limit_period TEXT NOT NULL DEFAULT 'monthly' CHECK (limit_period IN ('daily', 'weekly', 'monthly')),
    alert_threshold NUMERIC NOT NULL DEFAULT 0.80 CHECK (alert_threshold > 0 AND alert_threshold <= 1),
    hard_limit BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id)
);

-- One row per budget and calendar window; created on first use, so a new period starts at
-- zero by construction. `alert_sent` is the alert state (at most one alert per period).
CREATE TABLE budget_periods (
    organization_id UUID NOT NULL,
    budget_id UUID NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    period_end TIMESTAMPTZ NOT NULL,
    spent NUMERIC NOT NULL DEFAULT 0 CHECK (spent >= 0),
    reserved NUMERIC NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    alert_sent BOOLEAN NOT NULL DEFAULT false,
    alert_sent_at TIMESTAMPTZ,
    PRIMARY KEY (budget_id, period_start),
    FOREIGN KEY (organization_id, budget_id)
        REFERENCES budgets(organization_id, id) ON DELETE CASCADE,
    CHECK (period_end > period_start)
);

-- One row per request: the reservation (and, once settled, the idempotency record of
-- `settle`; a settlement without reservation writes a 'settled' row with amount 0). Kept after
-- settlement/release/expiry, so a late settlement still lands in the reservation's periods.
CREATE TABLE budget_reservations (
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    request_id UUID NOT NULL,
    amount NUMERIC NOT NULL CHECK (amount >= 0),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'settled', 'released', 'expired')),
    expires_at TIMESTAMPTZ NOT NULL,
    settled_amount NUMERIC CHECK (settled_amount >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, request_id)
);
CREATE INDEX idx_budget_reservations_expiry ON budget_reservations(expires_at) WHERE status = 'active';

-- The budgets (and their periods) a reservation draws on.
CREATE TABLE budget_reservation_items (
    organization_id UUID NOT NULL,
    request_id UUID NOT NULL,
    budget_id UUID NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, request_id, budget_id),
    FOREIGN KEY (organization_id, request_id)
        REFERENCES budget_reservations(organization_id, request_id) ON DELETE CASCADE,
    FOREIGN KEY (budget_id, period_start)
        REFERENCES budget_periods(budget_id, period_start) ON DELETE CASCADE
);
CREATE INDEX idx_budget_reservation_items_period ON budget_reservation_items(budget_id, period_start);

CREATE TABLE invoices (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id UUID NOT NULL REFERENCES organizations(id),
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,
    subtotal NUMERIC NOT NULL CHECK (subtotal >= 0),
    tax NUMERIC NOT NULL DEFAULT 0 CHECK (tax >= 0),
    total NUMERIC NOT NULL CHECK (total >= 0),
    line_items JSONB NOT NULL DEFAULT '[]',
    status TEXT NOT NULL DEFAULT 'draft' CHECK (
        status IN ('draft', 'sent', 'paid', 'overdue', 'cancelled')
    ),
    stripe_invoice_id TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at TIMESTAMPTZ
);

-- ============================================================
-- INVITATIONS
-- ============================================================

CREATE TABLE invitations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email TEXT NOT NULL,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    group_ids UUID[] NOT NULL DEFAULT ARRAY[]::UUID[],
    profile_id UUID REFERENCES user_profiles(id),
    -- hex SHA-256 of the token; the token itself is never stored
    token_hash TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'expired', 'revoked')),
    expires_at TIMESTAMPTZ NOT NULL,
    invited_by UUID REFERENCES users(id),
    accepted_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ============================================================
-- OUTBOX (LiteLLM sync): written by directory changes in their own transaction
-- ============================================================

CREATE TABLE outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    entity_kind TEXT NOT NULL CHECK (entity_kind IN ('org', 'group', 'member')),
    entity_id UUID NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT false,
    version BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    available_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    dead_at TIMESTAMPTZ
);
CREATE INDEX idx_outbox_pending ON outbox(seq) WHERE completed_at IS NULL AND dead_at IS NULL;
CREATE INDEX idx_outbox_dead ON outbox(seq) WHERE dead_at IS NOT NULL;

-- Per-entity version counter (the row lock serializes concurrent changes of one entity).
CREATE TABLE outbox_versions (
    organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    entity_kind TEXT NOT NULL,
    entity_id UUID NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (organization_id, entity_kind, entity_id)
);

-- ============================================================
-- INDEXES (the seed's, scoped by organization where RLS makes every query carry it)
-- ============================================================

CREATE INDEX idx_org_memberships_user ON org_memberships(user_id);
CREATE INDEX idx_group_memberships_user ON group_memberships(organization_id, user_id);
CREATE INDEX idx_group_memberships_org_member ON group_memberships(organization_id, group_id);
CREATE INDEX idx_guardrails_org ON guardrails(organization_id);
CREATE INDEX idx_guardrails_level ON guardrails(level, scope_id) WHERE is_active = true;
-- date-range scans, aggregation and the streamed export's keyset (created_at, request_id)
CREATE INDEX idx_usage_records_org ON usage_records(organization_id, created_at, request_id);
CREATE INDEX idx_usage_records_user ON usage_records(organization_id, user_id, created_at);
CREATE INDEX idx_budgets_scope ON budgets(organization_id, scope_type, scope_id);
CREATE INDEX idx_budget_periods_org ON budget_periods(organization_id);
CREATE INDEX idx_invitations_org ON invitations(organization_id);
CREATE INDEX idx_invitations_token ON invitations(token_hash) WHERE status = 'pending';
CREATE INDEX idx_invoices_org ON invoices(organization_id, period_start);

-- ============================================================
-- ROW-LEVEL SECURITY
-- Every tenant table: ENABLED and FORCED (the owner is subject to it too), one policy on the
-- transaction-local setting `app.current_org_id`. An unset or empty setting yields NULL,
-- which equals nothing: no row is visible or writable without a tenant context.
-- ============================================================

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations FOR ALL
    USING (id = NULLIF(current_setting('app.current_org_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('app.current_org_id', true), '')::uuid);

DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'org_memberships', 'groups', 'group_memberships', 'org_tier_access', 'guardrails',
        'usage_records', 'budgets', 'budget_periods', 'budget_reservations',
        'budget_reservation_items', 'invoices', 'invitations', 'outbox', 'outbox_versions'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR ALL '
            'USING (organization_id = NULLIF(current_setting(''app.current_org_id'', true), '''')::uuid) '
            'WITH CHECK (organization_id = NULLIF(current_setting(''app.current_org_id'', true), '''')::uuid)',
            t);
    END LOOP;
END
$$;

-- Platform rules apply to every tenant, so every tenant may read them (never write them).
CREATE POLICY platform_rules_read ON guardrails FOR SELECT USING (organization_id IS NULL);

-- Platform paths: the owner role (the one running this migration) may do exactly what the
-- SECURITY DEFINER functions below need, and nothing more. The app role has none of these.
CREATE POLICY platform_read ON organizations FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY platform_read ON org_memberships FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY platform_read ON groups FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY platform_read ON invitations FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY platform_outbox ON outbox FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY platform_reclaim ON budget_reservations FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY platform_reclaim ON budget_reservation_items FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY platform_reclaim ON budget_periods FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY platform_rules_write ON guardrails FOR ALL TO CURRENT_USER
    USING (organization_id IS NULL) WITH CHECK (organization_id IS NULL);

-- ============================================================
-- PLATFORM FUNCTIONS (SECURITY DEFINER, owned by the owner role)
-- The one explicit path for platform-wide operations. Each does one thing; EXECUTE is
-- revoked from PUBLIC and granted to the app role by stratai_grant_app_role.
-- ============================================================

CREATE FUNCTION stratai_list_orgs() RETURNS SETOF organizations
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM organizations ORDER BY id
$$;

CREATE FUNCTION stratai_find_org_by_slug(p_slug TEXT) RETURNS SETOF organizations
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM organizations WHERE slug = p_slug
$$;

CREATE FUNCTION stratai_memberships_of_user(p_user UUID) RETURNS SETOF org_memberships
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM org_memberships WHERE user_id = p_user ORDER BY organization_id
$$;

CREATE FUNCTION stratai_locate_group(p_group UUID) RETURNS UUID
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT organization_id FROM groups WHERE id = p_group
$$;

CREATE FUNCTION stratai_find_invitation(p_token_hash TEXT) RETURNS SETOF invitations
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM invitations WHERE token_hash = p_token_hash
$$;

CREATE FUNCTION stratai_outbox_pending(p_now TIMESTAMPTZ, p_limit INTEGER) RETURNS SETOF outbox
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM outbox
    WHERE completed_at IS NULL AND dead_at IS NULL AND available_at <= p_now
    ORDER BY seq
    LIMIT p_limit
$$;

CREATE FUNCTION stratai_outbox_complete(p_seq BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE outbox SET completed_at = COALESCE(completed_at, now()), dead_at = NULL WHERE seq = p_seq;
    RETURN FOUND;
END
$$;

CREATE FUNCTION stratai_outbox_fail(p_seq BIGINT, p_error TEXT, p_retry_at TIMESTAMPTZ) RETURNS BOOLEAN
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE outbox
    SET attempts = attempts + 1, last_error = p_error, available_at = p_retry_at
    WHERE seq = p_seq;
    RETURN FOUND;
END
$$;

CREATE FUNCTION stratai_outbox_dead_letter(p_seq BIGINT, p_reason TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE outbox SET dead_at = COALESCE(dead_at, now()), completed_at = NULL, last_error = p_reason
    WHERE seq = p_seq;
    RETURN FOUND;
END
$$;

CREATE FUNCTION stratai_outbox_dead_letters(p_limit INTEGER) RETURNS SETOF outbox
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM outbox WHERE dead_at IS NOT NULL ORDER BY seq DESC LIMIT p_limit
$$;

-- Releases every active reservation expired at p_now; returns how many. Reservations are
-- locked in (organization, request) order and in-flight ones (locked by a settle/release)
-- are skipped: they are being resolved. Period rows are then updated in (budget, period)
-- order, the order reserve locks them in, so reclaim never deadlocks with reserve.
CREATE FUNCTION stratai_reclaim_expired(p_now TIMESTAMPTZ) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    orgs UUID[];
    requests UUID[];
    amounts NUMERIC[];
    r RECORD;
BEGIN
    WITH expired AS (
        SELECT organization_id, request_id FROM budget_reservations
        WHERE status = 'active' AND expires_at <= p_now
        ORDER BY organization_id, request_id
        FOR UPDATE SKIP LOCKED
    ), updated AS (
        UPDATE budget_reservations b SET status = 'expired'
        FROM expired e
        WHERE b.organization_id = e.organization_id AND b.request_id = e.request_id
        RETURNING b.organization_id, b.request_id, b.amount
    )
    SELECT array_agg(organization_id), array_agg(request_id), array_agg(amount)
    INTO orgs, requests, amounts
    FROM updated;
    IF orgs IS NULL THEN
        RETURN 0;
    END IF;
    FOR r IN
        SELECT i.budget_id, i.period_start, sum(u.amount) AS amount
        FROM unnest(orgs, requests, amounts) AS u(organization_id, request_id, amount)
        JOIN budget_reservation_items i
          ON i.organization_id = u.organization_id AND i.request_id = u.request_id
        GROUP BY i.budget_id, i.period_start
        ORDER BY i.budget_id, i.period_start
    LOOP
        UPDATE budget_periods SET reserved = GREATEST(reserved - r.amount, 0)
        WHERE budget_id = r.budget_id AND period_start = r.period_start;
    END LOOP;
    RETURN cardinality(orgs);
END
$$;

CREATE FUNCTION stratai_put_platform_rule(
    p_id UUID, p_name TEXT, p_description TEXT, p_type TEXT, p_config JSONB, p_level TEXT,
    p_scope_id UUID, p_action TEXT, p_priority INTEGER, p_active BOOLEAN, p_created_at TIMESTAMPTZ
) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_level NOT IN ('global', 'tier') THEN
        RAISE EXCEPTION 'platform rules are global or tier rules, not `%`', p_level
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO guardrails (id, organization_id, name, description, type, config, level,
                            scope_id, action, priority, is_active, created_at)
    VALUES (p_id, NULL, p_name, p_description, p_type, p_config, p_level, p_scope_id,
            p_action, p_priority, p_active, p_created_at)
    ON CONFLICT (id) DO UPDATE SET
        name = EXCLUDED.name, description = EXCLUDED.description, type = EXCLUDED.type,
        config = EXCLUDED.config, level = EXCLUDED.level, scope_id = EXCLUDED.scope_id,
        action = EXCLUDED.action, priority = EXCLUDED.priority, is_active = EXCLUDED.is_active,
        created_at = EXCLUDED.created_at
    WHERE guardrails.organization_id IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rule `%` exists and is not a platform rule', p_id
            USING ERRCODE = 'unique_violation';
    END IF;
END
$$;

CREATE FUNCTION stratai_delete_platform_rule(p_id UUID) RETURNS BOOLEAN
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM guardrails WHERE id = p_id AND organization_id IS NULL;
    RETURN FOUND;
END
$$;

-- ============================================================
-- APP ROLE SETUP (run by the owner; see PgStore::setup_app_role)
-- ============================================================

-- Grants the serving role exactly the privileges it needs. Idempotent; run again after
-- migrations that add tables or functions.
CREATE FUNCTION stratai_grant_app_role(p_role TEXT) RETURNS VOID
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
        'invitations', 'outbox_versions'
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

-- Creates the serving role when missing (needs CREATEROLE): LOGIN, no superuser, no
-- BYPASSRLS, no CREATEDB/CREATEROLE, owns nothing; then grants it.
CREATE FUNCTION stratai_create_app_role(p_role TEXT, p_password TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
        IF p_password IS NULL THEN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE', p_role);
        ELSE
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD %L',
                           p_role, p_password);
        END IF;
    END IF;
    PERFORM stratai_grant_app_role(p_role);
END
$$;

DO $$
DECLARE
    f TEXT;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'stratai\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
