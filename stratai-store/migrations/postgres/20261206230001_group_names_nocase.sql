-- Group names are unique per organization whatever their case. The stores compare names
-- case-insensitively (Unicode lowercase) in the transaction that writes them; this index
-- closes the race between two transactions creating the same name at once.
CREATE UNIQUE INDEX groups_org_name_nocase ON groups (organization_id, lower(name));
