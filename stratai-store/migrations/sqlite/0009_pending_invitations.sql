-- A sign-in joins the pending invitations addressed to the person's email in every
-- organization: one indexed read instead of one per organization.
CREATE INDEX idx_invitations_pending_email ON invitations (email) WHERE status = 'pending';
