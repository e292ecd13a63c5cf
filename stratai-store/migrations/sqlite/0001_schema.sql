-- StratAI schema for SQLite: the seed's complete schema, adapted to SQLite types, plus the
-- ledger (budget periods and reservations with their alert state) and the sync outbox.
--
-- Conventions (the Rust code in src/sqlite relies on them):
--   ids          BLOB (16-byte uuid)
--   timestamps   TEXT, fixed-width UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ` (sorts chronologically)
--   money        TEXT decimal, exact (never REAL); arithmetic happens in Rust under the write lock
--   arrays/JSON  TEXT holding JSON
--   booleans     INTEGER 0/1
-- Differences from the seed, on purpose:
--   * budgets keep no `current_usage`/`period_start`/`period_end`/`alert_sent`: the state of a
--     period is a row of `budget_periods`, so a new period starts at zero by construction.
--   * org_memberships keeps only the LiteLLM key id, never the raw virtual key.
--   * invitations keep only the SHA-256 of the token (`token_hash`).
--   * unique keys that could reveal another tenant's rows are scoped per organization
--     (usage request ids, group names, reservations).

-- ============================================================
-- AUTHENTICATION & IDENTITY
-- ============================================================

CREATE TABLE users (
    id BLOB PRIMARY KEY NOT NULL,
    email TEXT UNIQUE NOT NULL,
    name TEXT,
    avatar_url TEXT,
    -- OIDC subject (the seed's Auth0 reference)
    auth0_id TEXT UNIQUE,
    platform_role TEXT NOT NULL DEFAULT 'user' CHECK (platform_role IN ('super_admin', 'user')),
    is_active INTEGER NOT NULL DEFAULT 1,
    last_login_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- ============================================================
-- MULTI-TENANCY
-- ============================================================

CREATE TABLE organizations (
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    slug TEXT UNIQUE NOT NULL,
    litellm_org_id TEXT UNIQUE,
    settings TEXT NOT NULL,
    billing_email TEXT,
    billing_plan TEXT NOT NULL DEFAULT 'trial' CHECK (
        billing_plan IN ('trial', 'starter', 'business', 'enterprise')
    ),
    stripe_customer_id TEXT,
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE user_profiles (
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    default_tiers TEXT NOT NULL DEFAULT '["basic"]',
    default_guardrails TEXT NOT NULL DEFAULT '[]',
    available_to TEXT NOT NULL DEFAULT 'all' CHECK (available_to IN ('all', 'internal', 'enterprise')),
    created_at TEXT NOT NULL
);

CREATE TABLE org_memberships (
    organization_id BLOB NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    -- LiteLLM's key id (hash); the raw virtual key is never stored
    virtual_key_id TEXT,
    profile_id BLOB REFERENCES user_profiles(id),
    -- JSON array of tier slugs, NULL: no member-level restriction
    allowed_tiers TEXT,
    monthly_budget TEXT,
    joined_at TEXT NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);

CREATE TABLE groups (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    litellm_team_id TEXT,
    allowed_tiers TEXT,
    monthly_budget TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (organization_id, name),
    -- target of the composite foreign keys that keep memberships inside one organization
    UNIQUE (organization_id, id)
);

CREATE TABLE group_memberships (
    group_id BLOB NOT NULL,
    organization_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('lead', 'member')),
    joined_at TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id),
    -- the group and the membership must be of the same organization
    FOREIGN KEY (organization_id, group_id) REFERENCES groups(organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, user_id) REFERENCES org_memberships(organization_id, user_id) ON DELETE CASCADE
);

-- ============================================================
-- MODEL TIERS (MODULES)
-- ============================================================

CREATE TABLE model_tiers (
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    slug TEXT UNIQUE NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    best_use_case TEXT NOT NULL DEFAULT '',
    base_price TEXT NOT NULL DEFAULT '0',
    input_token_rate TEXT NOT NULL,
    output_token_rate TEXT NOT NULL,
    models TEXT NOT NULL,
    sort_order INTEGER NOT NULL DEFAULT 0,
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);

-- One row per model: a model belongs to at most one tier.
CREATE TABLE tier_models (
    model TEXT PRIMARY KEY NOT NULL,
    tier_id BLOB NOT NULL REFERENCES model_tiers(id) ON DELETE CASCADE
);

CREATE TABLE org_tier_access (
    organization_id BLOB NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    tier_id BLOB NOT NULL REFERENCES model_tiers(id) ON DELETE CASCADE,
    enabled INTEGER NOT NULL DEFAULT 1,
    monthly_budget TEXT,
    enabled_at TEXT NOT NULL,
    PRIMARY KEY (organization_id, tier_id)
);

-- ============================================================
-- GUARDRAILS
-- ============================================================

CREATE TABLE guardrails (
    id BLOB PRIMARY KEY NOT NULL,
    -- owner: NULL for platform rules (global, platform-wide tier)
    organization_id BLOB REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    type TEXT NOT NULL CHECK (type IN (
        'model_allowlist', 'model_denylist', 'token_limit',
        'rate_limit', 'content_filter', 'output_modifier',
        'budget_limit', 'time_restriction'
    )),
    config TEXT NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('global', 'org', 'tier', 'group', 'user')),
    scope_id BLOB,
    action TEXT NOT NULL DEFAULT 'block' CHECK (action IN ('block', 'warn', 'modify', 'log')),
    priority INTEGER NOT NULL DEFAULT 0,
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);

-- ============================================================
-- USAGE & BILLING
-- ============================================================

CREATE TABLE usage_records (
    id INTEGER PRIMARY KEY,
    organization_id BLOB NOT NULL REFERENCES organizations(id),
    -- checked against the organization's groups on append; no foreign key so that history
    -- survives a deleted group
    group_id BLOB,
    user_id BLOB NOT NULL REFERENCES users(id),
    tier_id BLOB REFERENCES model_tiers(id),
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    provider_cost TEXT NOT NULL,
    billed_amount TEXT NOT NULL,
    -- StratAI's request id: the idempotency key, unique per organization
    request_id BLOB NOT NULL,
    litellm_request_id TEXT,
    conversation_id BLOB,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('success', 'partial', 'failed')),
    created_at TEXT NOT NULL,
    UNIQUE (organization_id, request_id)
);

CREATE TABLE budgets (
    id BLOB PRIMARY KEY NOT NULL,
    scope_type TEXT NOT NULL CHECK (scope_type IN ('org', 'group', 'user', 'tier')),
    -- the organization's id for an org budget
    scope_id BLOB NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    limit_amount TEXT NOT NULL,
    limit_period TEXT NOT NULL DEFAULT 'monthly' CHECK (limit_period IN ('daily', 'weekly', 'monthly')),
    alert_threshold TEXT NOT NULL DEFAULT '0.80',
    hard_limit INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- The state of one budget in one period, with its alert state.
CREATE TABLE budget_periods (
    budget_id BLOB NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    organization_id BLOB NOT NULL,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    spent TEXT NOT NULL DEFAULT '0',
    reserved TEXT NOT NULL DEFAULT '0',
    alert_sent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period_start)
);

-- One per request: active (holding budget), released, or settled. Also written, with a zero
-- amount, when a request is settled without a reservation, so settling stays idempotent.
CREATE TABLE budget_reservations (
    organization_id BLOB NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    request_id BLOB NOT NULL,
    amount TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'released', 'settled')),
    settled_amount TEXT,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (organization_id, request_id)
);

-- The budgets a reservation draws on, each in the period current at reservation.
CREATE TABLE budget_reservation_items (
    organization_id BLOB NOT NULL,
    request_id BLOB NOT NULL,
    budget_id BLOB NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    PRIMARY KEY (organization_id, request_id, budget_id),
    FOREIGN KEY (organization_id, request_id)
        REFERENCES budget_reservations(organization_id, request_id) ON DELETE CASCADE
);

CREATE TABLE invoices (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations(id),
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    subtotal TEXT NOT NULL,
    tax TEXT NOT NULL DEFAULT '0',
    total TEXT NOT NULL,
    line_items TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL DEFAULT 'draft' CHECK (
        status IN ('draft', 'sent', 'paid', 'overdue', 'cancelled')
    ),
    stripe_invoice_id TEXT,
    created_at TEXT NOT NULL,
    paid_at TEXT
);

-- ============================================================
-- INVITATIONS
-- ============================================================

CREATE TABLE invitations (
    id BLOB PRIMARY KEY NOT NULL,
    email TEXT NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    group_ids TEXT NOT NULL DEFAULT '[]',
    profile_id BLOB REFERENCES user_profiles(id),
    -- hex SHA-256 of the token; the token itself is never stored
    token_hash TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'expired', 'revoked')),
    expires_at TEXT NOT NULL,
    invited_by BLOB REFERENCES users(id),
    accepted_at TEXT,
    created_at TEXT NOT NULL
);

-- ============================================================
-- LITELLM SYNC OUTBOX
-- ============================================================

-- Written in the same transaction as the directory change it announces.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id BLOB NOT NULL,
    entity_kind TEXT NOT NULL CHECK (entity_kind IN ('org', 'group', 'member')),
    entity_id BLOB NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    available_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- The last version of each entity (strictly increasing per entity).
CREATE TABLE outbox_versions (
    entity_kind TEXT NOT NULL,
    entity_id BLOB NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (entity_kind, entity_id)
);

-- ============================================================
-- INDEXES
-- ============================================================

CREATE INDEX idx_org_memberships_org ON org_memberships(organization_id);
CREATE INDEX idx_org_memberships_user ON org_memberships(user_id);
CREATE INDEX idx_groups_org ON groups(organization_id);
CREATE INDEX idx_group_memberships_user ON group_memberships(user_id);
CREATE INDEX idx_guardrails_level ON guardrails(level, scope_id) WHERE is_active = 1;
CREATE INDEX idx_guardrails_org ON guardrails(organization_id);
CREATE INDEX idx_usage_records_org ON usage_records(organization_id, created_at);
CREATE INDEX idx_usage_records_user ON usage_records(user_id, created_at);
CREATE INDEX idx_usage_records_org_user ON usage_records(organization_id, user_id, created_at);
CREATE INDEX idx_usage_records_org_group ON usage_records(organization_id, group_id, created_at);
CREATE INDEX idx_budgets_scope ON budgets(scope_type, scope_id);
CREATE INDEX idx_budgets_org ON budgets(organization_id);
CREATE INDEX idx_invitations_token ON invitations(token_hash) WHERE status = 'pending';
CREATE INDEX idx_invitations_org ON invitations(organization_id);
CREATE INDEX idx_invoices_org ON invoices(organization_id, period_start);
CREATE INDEX idx_reservations_expiry ON budget_reservations(expires_at) WHERE status = 'active';
CREATE INDEX idx_outbox_pending ON outbox(available_at, seq) WHERE status = 'pending';
CREATE INDEX idx_outbox_dead ON outbox(seq) WHERE status = 'dead';
