-- Invoices as documents (stratai-core's `billing`): one organization's month, drafted from its
-- usage records, then issued and paid or voided. The schema's first `invoices` table had no
-- reader or writer, so it is replaced (no rows to keep): the statuses are the life cycle's
-- (draft, issued, paid, void), and the month, timezone, tax rate and correction link are kept.
DROP TABLE invoices;

CREATE TABLE invoices (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations(id),
    -- YYYY-MM, local to `timezone`
    month TEXT NOT NULL,
    timezone TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    requests INTEGER NOT NULL CHECK (requests >= 0),
    -- exact decimal text
    subtotal TEXT NOT NULL,
    tax_rate TEXT NOT NULL,
    tax TEXT NOT NULL,
    total TEXT NOT NULL,
    line_items TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'issued', 'paid', 'void')),
    corrects BLOB REFERENCES invoices(id),
    stripe_invoice_id TEXT,
    created_at TEXT NOT NULL,
    issued_at TEXT,
    paid_at TEXT,
    voided_at TEXT
);
CREATE INDEX idx_invoices_org ON invoices(organization_id, month);
-- At most one draft per organization and month: a new draft replaces the old one.
CREATE UNIQUE INDEX invoices_one_draft_per_month ON invoices(organization_id, month)
    WHERE status = 'draft';

-- The database's own guard of the life cycle: once issued, only the status (along the life
-- cycle) and its timestamps change, and the row is never deleted.
CREATE TRIGGER invoices_issued_are_frozen BEFORE UPDATE ON invoices
WHEN OLD.status <> 'draft' AND (
    NEW.id IS NOT OLD.id OR NEW.organization_id IS NOT OLD.organization_id
    OR NEW.month IS NOT OLD.month OR NEW.timezone IS NOT OLD.timezone
    OR NEW.period_start IS NOT OLD.period_start OR NEW.period_end IS NOT OLD.period_end
    OR NEW.requests IS NOT OLD.requests OR NEW.subtotal IS NOT OLD.subtotal
    OR NEW.tax_rate IS NOT OLD.tax_rate OR NEW.tax IS NOT OLD.tax OR NEW.total IS NOT OLD.total
    OR NEW.line_items IS NOT OLD.line_items OR NEW.corrects IS NOT OLD.corrects
    OR NEW.created_at IS NOT OLD.created_at)
BEGIN
    SELECT RAISE(ABORT, 'an issued invoice never changes; a correction is a new invoice');
END;

CREATE TRIGGER invoices_follow_the_life_cycle BEFORE UPDATE OF status ON invoices
WHEN NEW.status <> OLD.status AND NOT (
    (OLD.status = 'draft' AND NEW.status IN ('issued', 'void'))
    OR (OLD.status = 'issued' AND NEW.status IN ('paid', 'void')))
BEGIN
    SELECT RAISE(ABORT, 'invoice status change outside the life cycle');
END;

CREATE TRIGGER invoices_issued_are_kept BEFORE DELETE ON invoices
WHEN OLD.status <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'an issued invoice is never deleted');
END;
