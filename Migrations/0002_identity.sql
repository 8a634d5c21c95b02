-- Identity and tenancy: users with roles and visibility scopes, refresh tokens, several API
-- keys per device (rotation), the audience of each change-log event (so a node can filter a
-- stream by the subscriber's scope without parsing payloads), and row-level security on every
-- tenant-owned table as a second wall behind the service's own tenant checks.

CREATE TABLE users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email          text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role           text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'driver', 'viewer')),
    password_hash  text NOT NULL,
    -- The driver's device: what a driver may post for and read.
    device_id      uuid,
    -- Visibility scope: NULL = the whole tenant; else {"groups": {"<group>": {"max_grade": n} | {"grades": [..]}}}.
    scope          jsonb CHECK (scope IS NULL OR jsonb_typeof(scope) = 'object'),
    -- Bumped whenever what the user may see changes; open sessions compare it.
    scope_version  bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE SET NULL (device_id)
);

-- Refresh tokens are stored as SHA-256 only. Rotation marks the old one used; using a used
-- token again means it was stolen, and the whole family (one login) is revoked.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   text NOT NULL,
    user_id     uuid NOT NULL,
    family_id   uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Several keys per device, so a key can be rotated without a gap and revoked on its own.
CREATE TABLE device_api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     text NOT NULL,
    device_id     uuid NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    -- The first characters of the key, so an operator can tell keys apart in a list.
    key_prefix    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX device_api_keys_device ON device_api_keys (device_id);

INSERT INTO device_api_keys (tenant_id, device_id, key_hash, key_prefix)
SELECT tenant_id, id, api_key_hash, 'pgt_…' FROM devices WHERE api_key_hash IS NOT NULL;

ALTER TABLE devices DROP COLUMN api_key_hash;

-- A marker must name a device of its own tenant (0001 referenced the device id alone).
ALTER TABLE latest_positions
    DROP CONSTRAINT latest_positions_device_id_fkey,
    ADD FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE;

-- Who may see an event: the device's group and grade when it was logged. NULL for events that
-- are not about one device.
ALTER TABLE change_log ADD COLUMN device_group text, ADD COLUMN device_grade integer;

CREATE INDEX devices_tenant ON devices (tenant_id, group_name, grade);

-- The role the service assumes inside every tenant-scoped transaction (SET LOCAL ROLE via
-- set_config). It does not bypass row-level security, so a query that forgot its tenant
-- filter still cannot read or write another tenant's rows. Roles are cluster-wide: create it
-- once, and let the migrating user switch to it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgtrack_tenant') THEN
        CREATE ROLE pgtrack_tenant NOLOGIN NOBYPASSRLS;
    END IF;
    IF NOT pg_has_role(current_user, 'pgtrack_tenant', 'MEMBER') THEN
        EXECUTE format('GRANT pgtrack_tenant TO %I', current_user);
    END IF;
END
$$;

-- Grants name each tenant-owned table: no blanket or default privileges, so a daily partition
-- of positions (which has no policy of its own) cannot be read around the parent's policy, and
-- a table added by a later migration is unreachable until that migration grants it together
-- with its policy.
GRANT USAGE ON SCHEMA public TO pgtrack_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE
   ON tenants, devices, device_api_keys, users, refresh_tokens, positions, latest_positions,
      change_log, change_log_heads
   TO pgtrack_tenant;
GRANT USAGE ON SEQUENCE positions_id_seq TO pgtrack_tenant;

-- The tenant of the current transaction, set by the service with set_config('pgtrack.tenant', …, true).
-- Unset means no tenant: every policy below then matches nothing.
CREATE FUNCTION pgtrack_current_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('pgtrack.tenant', true), '')
$$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = pgtrack_current_tenant()) WITH CHECK (id = pgtrack_current_tenant());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['devices', 'device_api_keys', 'users', 'refresh_tokens', 'positions',
                             'latest_positions', 'change_log', 'change_log_heads'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = pgtrack_current_tenant()) '
                       'WITH CHECK (tenant_id = pgtrack_current_tenant())', t);
    END LOOP;
END
$$;
