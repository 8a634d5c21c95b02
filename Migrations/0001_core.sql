-- Core schema of the bus: tenants, devices, position history, latest positions and the
-- ordered change log. Functions and triggers live in SQL/ and are re-applied on every migrate.

CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    group_name    text NOT NULL DEFAULT 'default' CHECK (length(group_name) BETWEEN 1 AND 100),
    grade         integer NOT NULL DEFAULT 0 CHECK (grade BETWEEN 0 AND 1000),
    -- SHA-256 of the device API key; the key itself is shown once and never stored.
    api_key_hash  bytea UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Lets positions reference (tenant, device) so a row can never name another tenant's device.
    UNIQUE (tenant_id, id)
);

-- Position history, one partition per UTC day of the fix time. Partitions are created ahead by
-- pgtrack_ensure_position_partitions(); a fix with no partition is rejected, never dropped.
CREATE SEQUENCE positions_id_seq AS bigint;

CREATE TABLE positions (
    id          bigint NOT NULL DEFAULT nextval('positions_id_seq'),
    tenant_id   text NOT NULL,
    device_id   uuid NOT NULL,
    booking_id  text CHECK (booking_id ~ '^[A-Za-z0-9._:-]{1,40}$'),
    fix_time    timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    location    geography(Point, 4326) NOT NULL,
    speed       double precision CHECK (speed >= 0),
    heading     double precision CHECK (heading >= 0 AND heading < 360),
    altitude    double precision,
    accuracy    double precision CHECK (accuracy >= 0),
    battery     double precision CHECK (battery BETWEEN 0 AND 100),
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
) PARTITION BY RANGE (fix_time);

ALTER SEQUENCE positions_id_seq OWNED BY positions.id;

CREATE INDEX positions_fix_time_brin ON positions USING brin (fix_time);
CREATE INDEX positions_device_time ON positions (device_id, fix_time);
CREATE INDEX positions_booking_time ON positions (tenant_id, booking_id, fix_time) WHERE booking_id IS NOT NULL;

-- One row per device: the newest fix by fix time. Upserted by the positions trigger.
CREATE TABLE latest_positions (
    device_id   uuid PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    booking_id  text,
    fix_time    timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    location    geography(Point, 4326) NOT NULL,
    speed       double precision,
    heading     double precision,
    altitude    double precision,
    accuracy    double precision,
    battery     double precision,
    attributes  jsonb NOT NULL,
    -- The change-log seq of the event that set this row.
    seq         bigint NOT NULL
);

CREATE INDEX latest_positions_tenant ON latest_positions (tenant_id);

-- Per-tenant head of the change log. Writers reserve seqs by updating this row, which holds its
-- row lock until commit: seqs of one tenant therefore commit in seq order, so "everything up to
-- seq N" is a well-defined resume point and a reader never sees N+1 before N.
CREATE TABLE change_log_heads (
    tenant_id       text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    last_seq        bigint NOT NULL DEFAULT 0,
    -- Every seq <= pruned_through may have been deleted: resuming from before it needs a reset.
    pruned_through  bigint NOT NULL DEFAULT 0
);

-- The truth behind every push. NOTIFY is only the doorbell.
CREATE TABLE change_log (
    tenant_id   text NOT NULL,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    device_id   uuid,
    booking_id  text,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);

CREATE INDEX change_log_booking ON change_log (tenant_id, booking_id, seq) WHERE booking_id IS NOT NULL;
CREATE INDEX change_log_created_brin ON change_log USING brin (created_at);
