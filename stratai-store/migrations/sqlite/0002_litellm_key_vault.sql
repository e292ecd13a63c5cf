-- Sealed LiteLLM virtual-key secrets (stratai-litellm's encrypted key vault; port
-- `KeyVaultStore`). LiteLLM shows a key's secret only once, so the sync keeps it here, sealed
-- (XChaCha20-Poly1305 under a master key the database never sees, bound to the organization,
-- the user and the key id), shared by the server and the worker and kept across restarts.
-- One row per membership; removing the member removes it.
CREATE TABLE litellm_key_vault (
    organization_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    -- LiteLLM's id of the key (token hash), as in org_memberships.virtual_key_id
    key_id TEXT NOT NULL,
    -- opaque sealed secret
    sealed BLOB NOT NULL,
    sealed_at TEXT NOT NULL,
    PRIMARY KEY (organization_id, user_id),
    FOREIGN KEY (organization_id, user_id)
        REFERENCES org_memberships(organization_id, user_id) ON DELETE CASCADE
);
