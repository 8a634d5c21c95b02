-- Device protocols (Traccar forwarding, OsmAnd / Traccar Client, OwnTracks) and fix filtering.
-- The functions that judge fixes are in SQL/035_position_filters.sql; the positions trigger
-- (SQL/030) calls them, so a program writing plain SQL gets the same filtering as the REST API.

-- What a device calls itself on the wire (Traccar's uniqueId, OsmAnd's id, OwnTracks' user/tid),
-- unique within its tenant. Printable ASCII without spaces: IMEIs, phone numbers, e-mails, ids.
ALTER TABLE devices ADD COLUMN unique_id text CHECK (unique_id ~ '^[!-~]{1,100}$');
CREATE UNIQUE INDEX devices_tenant_unique_id ON devices (tenant_id, unique_id) WHERE unique_id IS NOT NULL;

-- Tenant-level keys that may only post positions and device events, for a server (Traccar)
-- forwarding for many devices: each fix names its device by unique id within the key's tenant.
-- Stored as SHA-256 only, like device and sync keys.
CREATE TABLE ingest_api_keys (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash   bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Events a device or its server reports (Traccar: ignitionOn, alarm, geofenceEnter, …).
CREATE TABLE device_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL,
    device_id   uuid NOT NULL,
    type        text NOT NULL CHECK (length(type) BETWEEN 1 AND 100),
    event_time  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- The event's attributes (alarm, geofenceId, …) and the position it refers to, as sent.
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    position    jsonb,
    seq         bigint,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX device_events_device_time ON device_events (device_id, event_time);

-- NULL: the fix was accepted. Otherwise the filter that rejected it (invalid, zero, duplicate,
-- future, past, accuracy, max_speed, min_period, jitter): kept as history, never the marker.
-- IF NOT EXISTS: the fleet migration may add it too.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS filter_reason text;

-- Per-tenant filter settings (README "Fix filters"). A NULL threshold is off.
ALTER TABLE tenants
    ADD COLUMN filter_mode               text NOT NULL DEFAULT 'flag' CHECK (filter_mode IN ('flag', 'drop')),
    ADD COLUMN filter_invalid            boolean NOT NULL DEFAULT false,
    ADD COLUMN filter_zero               boolean NOT NULL DEFAULT false,
    ADD COLUMN filter_duplicate          boolean NOT NULL DEFAULT false,
    ADD COLUMN filter_future_seconds     double precision CHECK (filter_future_seconds BETWEEN 0 AND 86400),
    ADD COLUMN filter_past_seconds       double precision CHECK (filter_past_seconds BETWEEN 1 AND 31536000),
    ADD COLUMN filter_accuracy_metres    double precision CHECK (filter_accuracy_metres BETWEEN 1 AND 100000),
    ADD COLUMN filter_max_speed          double precision CHECK (filter_max_speed BETWEEN 1 AND 1000),
    ADD COLUMN filter_min_period_seconds double precision CHECK (filter_min_period_seconds BETWEEN 0.1 AND 86400),
    ADD COLUMN filter_jitter_metres      double precision CHECK (filter_jitter_metres BETWEEN 0.1 AND 1000),
    ADD COLUMN filter_stationary_speed   double precision NOT NULL DEFAULT 1 CHECK (filter_stationary_speed BETWEEN 0 AND 10),
    ADD COLUMN filter_skip_limit_seconds double precision CHECK (filter_skip_limit_seconds BETWEEN 1 AND 86400);

GRANT SELECT, INSERT, UPDATE, DELETE ON ingest_api_keys, device_events TO pgtrack_tenant;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ingest_api_keys', 'device_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I TO pgtrack_tenant '
                       'USING (tenant_id = pgtrack_current_tenant()) WITH CHECK (tenant_id = pgtrack_current_tenant())', t);
    END LOOP;
END
$$;
