-- Invoices as documents (stratai-core's `billing`): one organization's month, drafted from its
-- usage records, then issued and paid or voided. The schema's first `invoices` table had no
-- reader or writer, so it is replaced (no rows to keep): the statuses are the life cycle's
-- (draft, issued, paid, void), and the month, timezone, tax rate and correction link are kept.
-- A tenant table like the others: RLS enabled and forced with the tenant policy; the app
-- role's grants come from stratai_grant_app_role (which names `invoices`).
DROP TABLE invoices;

CREATE TABLE invoices (
    id UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations(id),
    -- YYYY-MM, local to `timezone`
    month TEXT NOT NULL CHECK (month ~ '^[0-9]{4}-[0-9]{2}$'),
    timezone TEXT NOT NULL,
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,
    requests BIGINT NOT NULL CHECK (requests >= 0),
    subtotal NUMERIC NOT NULL CHECK (subtotal >= 0),
    tax_rate NUMERIC NOT NULL CHECK (tax_rate >= 0 AND tax_rate <= 1),
    tax NUMERIC NOT NULL CHECK (tax >= 0),
    total NUMERIC NOT NULL CHECK (total >= 0),
    line_items JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'issued', 'paid', 'void')),
    corrects UUID REFERENCES invoices(id),
    stripe_invoice_id TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    issued_at TIMESTAMPTZ,
    paid_at TIMESTAMPTZ,
    voided_at TIMESTAMPTZ
);
CREATE INDEX idx_invoices_org ON invoices(organization_id, month);
-- At most one draft per organization and month: a new draft replaces the old one.
CREATE UNIQUE INDEX invoices_one_draft_per_month ON invoices(organization_id, month)
    WHERE status = 'draft';

ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invoices FOR ALL
    USING (organization_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid);

-- The database's own guard of the life cycle, for every role: once issued, only the status
-- (along the life cycle) and its timestamps change, and the row is never deleted.
CREATE FUNCTION stratai_invoice_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'an issued invoice is never deleted' USING ERRCODE = 'check_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (
        (NEW.id, NEW.organization_id, NEW.month, NEW.timezone, NEW.period_start, NEW.period_end,
         NEW.requests, NEW.subtotal, NEW.tax_rate, NEW.tax, NEW.total, NEW.line_items,
         NEW.corrects, NEW.created_at)
        IS DISTINCT FROM
        (OLD.id, OLD.organization_id, OLD.month, OLD.timezone, OLD.period_start, OLD.period_end,
         OLD.requests, OLD.subtotal, OLD.tax_rate, OLD.tax, OLD.total, OLD.line_items,
         OLD.corrects, OLD.created_at)) THEN
        RAISE EXCEPTION 'an issued invoice never changes; a correction is a new invoice'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'draft' AND NEW.status IN ('issued', 'void'))
        OR (OLD.status = 'issued' AND NEW.status IN ('paid', 'void'))) THEN
        RAISE EXCEPTION 'invoice status change from % to % is outside the life cycle',
            OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER invoices_guard BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION stratai_invoice_guard();
