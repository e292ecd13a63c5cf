-- Group names are unique per organization whatever their case. The stores compare names
-- case-insensitively (Unicode lowercase) in the transaction that writes them, under SQLite's
-- write lock; this index (ASCII lowercase, SQLite's `lower`) is the database's own wall.
CREATE UNIQUE INDEX groups_org_name_nocase ON groups (organization_id, lower(name));
