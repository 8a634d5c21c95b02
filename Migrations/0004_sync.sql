-- CDC sync tables: business data from another database, cached here from change events
-- (Debezium envelopes over HTTP, plain SQL, or native logical replication). The functions that
-- apply events are in SQL/070_sync.sql.

CREATE SCHEMA sync;
GRANT USAGE ON SCHEMA sync TO pgtrack_tenant;

-- A JSON value as float8 when it is a number, or a string holding one; else NULL (Debezium
-- sends DECIMAL columns as numbers or strings with decimal.handling.mode=double|string).
-- Plain expressions, no subqueries: these run for every row written to a sync table.
CREATE FUNCTION pgtrack_sync_number(v jsonb) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
               WHEN 'number' THEN (v #>> '{}')::double precision
               WHEN 'string' THEN CASE WHEN v #>> '{}' ~ '^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$'
                                       THEN (v #>> '{}')::double precision END
           END
$$;

-- A customer's location: a Debezium geometry/geography struct ({"wkb": base64, "srid"}), or
-- latitude/longitude columns (lat/lng/lon accepted). NULL when absent or out of range.
CREATE FUNCTION pgtrack_sync_point(lat double precision, lon double precision) RETURNS geography
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180
                THEN ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography END
$$;

-- PL/pgSQL on purpose, here and below: a SQL function in a generated column is inlined and
-- planned again by every INSERT statement, which made a one-row upsert 5x slower; PL/pgSQL
-- keeps its plans for the session.
CREATE FUNCTION pgtrack_sync_location(d jsonb) RETURNS geography
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF jsonb_typeof(d -> 'location') = 'object' AND jsonb_typeof(d -> 'location' -> 'wkb') = 'string' THEN
        RETURN ST_SetSRID(ST_GeomFromEWKB(decode(d -> 'location' ->> 'wkb', 'base64')),
                          coalesce(nullif((d -> 'location' ->> 'srid')::integer, 0), 4326))::geography;
    END IF;
    RETURN pgtrack_sync_point(coalesce(pgtrack_sync_number(d -> 'latitude'), pgtrack_sync_number(d -> 'lat')),
                              coalesce(pgtrack_sync_number(d -> 'longitude'), pgtrack_sync_number(d -> 'lng'),
                                       pgtrack_sync_number(d -> 'lon')));
END
$$;

-- A customer's geofence radius in metres (positive), under the names sources commonly use.
CREATE FUNCTION pgtrack_sync_radius(d jsonb) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN nullif(greatest(coalesce(pgtrack_sync_number(d -> 'geofence_radius_m'), pgtrack_sync_number(d -> 'geofence_radius_metres'),
                                    pgtrack_sync_number(d -> 'geofence_radius_meters'), pgtrack_sync_number(d -> 'geofence_radius'),
                                    pgtrack_sync_number(d -> 'geofenceRadius')), 0), 0);
END
$$;

-- Every sync table has the same bookkeeping: the source primary key (as text), the row as the
-- source last had it, and the source position and time of the change that wrote it. A delete
-- keeps the row as a tombstone (`deleted`) so that a late update cannot resurrect it;
-- tombstones older than the tenant's `sync_tombstone_days` are forgotten.
-- Typed columns are generated from `data`, so every way of writing a row fills them alike.
CREATE TABLE sync.accounts (
    tenant_id            text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                   text NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    data                 jsonb NOT NULL,
    deleted              boolean NOT NULL DEFAULT false,
    -- Sortable: MySQL [binlog file number, pos, row], PostgreSQL [lsn]; NULL when the source
    -- gives none (then the source time orders changes).
    source_position      numeric[],
    source_position_text text,
    source_ts            timestamptz NOT NULL,
    applied_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz,
    name                 text GENERATED ALWAYS AS (data ->> 'name') STORED,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE sync.customers (LIKE sync.accounts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE sync.customers DROP COLUMN name,
    ADD PRIMARY KEY (tenant_id, id),
    ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    ADD COLUMN name text GENERATED ALWAYS AS (data ->> 'name') STORED,
    ADD COLUMN account_id text GENERATED ALWAYS AS (coalesce(data ->> 'account_id', data ->> 'accountId')) STORED,
    ADD COLUMN location geography(Point, 4326) GENERATED ALWAYS AS (pgtrack_sync_location(data)) STORED,
    ADD COLUMN geofence_radius_metres double precision GENERATED ALWAYS AS (pgtrack_sync_radius(data)) STORED;
CREATE INDEX customers_location ON sync.customers USING gist (location) WHERE NOT deleted;

CREATE TABLE sync.products (LIKE sync.accounts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE sync.products DROP COLUMN name,
    ADD PRIMARY KEY (tenant_id, id),
    ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    ADD COLUMN name text GENERATED ALWAYS AS (data ->> 'name') STORED,
    ADD COLUMN sku text GENERATED ALWAYS AS (data ->> 'sku') STORED;

CREATE TABLE sync.orders (LIKE sync.accounts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE sync.orders DROP COLUMN name,
    ADD PRIMARY KEY (tenant_id, id),
    ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    ADD COLUMN customer_id text GENERATED ALWAYS AS (coalesce(data ->> 'customer_id', data ->> 'customerId')) STORED,
    ADD COLUMN status text GENERATED ALWAYS AS (data ->> 'status') STORED;
CREATE INDEX orders_customer ON sync.orders (tenant_id, customer_id);

CREATE TABLE sync.users (LIKE sync.accounts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE sync.users DROP COLUMN name,
    ADD PRIMARY KEY (tenant_id, id),
    ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    ADD COLUMN name text GENERATED ALWAYS AS (data ->> 'name') STORED,
    ADD COLUMN email text GENERATED ALWAYS AS (data ->> 'email') STORED;

-- Per table: the last change applied and the counters the lag endpoint reports.
CREATE TABLE sync.sync_state (
    tenant_id                 text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    table_name                text NOT NULL CHECK (table_name IN ('accounts', 'customers', 'products', 'orders', 'users')),
    last_source_position      numeric[],
    last_source_position_text text,
    last_source_ts            timestamptz,
    last_applied_at           timestamptz,
    events_applied            bigint NOT NULL DEFAULT 0,
    events_skipped            bigint NOT NULL DEFAULT 0,
    errors                    bigint NOT NULL DEFAULT 0,
    last_error                text,
    last_error_at             timestamptz,
    PRIMARY KEY (tenant_id, table_name)
);

-- Which sync table a source table feeds, and its primary-key column. Without a mapping, a
-- source table named like a sync table feeds it, keyed by `id`.
CREATE TABLE sync.table_mappings (
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source_table text NOT NULL CHECK (length(source_table) BETWEEN 1 AND 200),
    target_table text NOT NULL CHECK (target_table IN ('accounts', 'customers', 'products', 'orders', 'users')),
    key_column   text NOT NULL DEFAULT 'id' CHECK (length(key_column) BETWEEN 1 AND 200),
    PRIMARY KEY (tenant_id, source_table)
);

-- Events that could not be applied, kept whole with the reason (dead-letter mode).
CREATE TABLE sync.dead_letters (
    id           bigserial PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    received_at  timestamptz NOT NULL DEFAULT now(),
    source_table text,
    target_table text,
    reason       text NOT NULL,
    event        jsonb
);
CREATE INDEX dead_letters_tenant ON sync.dead_letters (tenant_id, id);

-- When each tenant's cdc_lag event was last logged: nodes race for it, one wins per period.
CREATE TABLE sync.lag_ticks (
    tenant_id text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    logged_at timestamptz NOT NULL
);

-- API keys that may only post change events (stored as SHA-256, like device keys).
CREATE TABLE sync.api_keys (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash   bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenants
    ADD COLUMN sync_tombstone_days integer NOT NULL DEFAULT 7 CHECK (sync_tombstone_days BETWEEN 1 AND 3650);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['accounts', 'customers', 'products', 'orders', 'users', 'sync_state', 'table_mappings',
                             'dead_letters', 'lag_ticks']
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON sync.%I TO pgtrack_tenant', t);
        EXECUTE format('ALTER TABLE sync.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON sync.%I USING (tenant_id = pgtrack_current_tenant())'
                       ' WITH CHECK (tenant_id = pgtrack_current_tenant())', t);
    END LOOP;
END
$$;
GRANT USAGE ON SEQUENCE sync.dead_letters_id_seq TO pgtrack_tenant;
