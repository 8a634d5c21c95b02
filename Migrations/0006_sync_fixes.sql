-- sync.api_keys names a tenant but had no row-level security (every other table with a tenant
-- column has it). The tenant role is granted nothing on it (keys are found by hash, outside any
-- tenant, like device keys), so this is defence in depth: a grant added later would still show
-- a tenant only its own keys.
ALTER TABLE sync.api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync.api_keys TO pgtrack_tenant USING (tenant_id = pgtrack_current_tenant())
    WITH CHECK (tenant_id = pgtrack_current_tenant());
