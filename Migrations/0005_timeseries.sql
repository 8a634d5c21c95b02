-- Time-series lifecycle: a change log partitioned by day, retention settings, rollups kept
-- incrementally from the change log, compacted tracks of old raw partitions, and the analyst
-- schema. The functions that run all of it live in SQL/080_maintenance.sql and SQL/090_analytics.sql.

-- 1. The change log, one partition per UTC day of created_at, so its retention window is kept
-- by dropping whole partitions. (tenant_id, seq) stays unique by construction: seqs are
-- reserved under the tenant's change_log_heads row lock. The primary key must name the
-- partition column; lookups by (tenant_id, seq) use its prefix.
ALTER TABLE change_log RENAME TO change_log_unpartitioned;

CREATE TABLE change_log (
    tenant_id    text NOT NULL,
    seq          bigint NOT NULL,
    kind         text NOT NULL,
    device_id    uuid,
    booking_id   text,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    device_group text,
    device_grade integer,
    PRIMARY KEY (tenant_id, seq, created_at)
) PARTITION BY RANGE (created_at);

-- Partitions for every day already logged and the week ahead (maintenance keeps extending it).
DO $$
DECLARE
    day date;
BEGIN
    FOR day IN
        SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM change_log_unpartitioned
        UNION
        SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7, interval '1 day')::date
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF change_log FOR VALUES FROM (%L) TO (%L)',
                       'change_log_p' || to_char(day, 'YYYYMMDD'),
                       day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END
$$;

INSERT INTO change_log (tenant_id, seq, kind, device_id, booking_id, payload, created_at, device_group, device_grade)
SELECT tenant_id, seq, kind, device_id, booking_id, payload, created_at, device_group, device_grade
  FROM change_log_unpartitioned;
DROP TABLE change_log_unpartitioned;

CREATE INDEX change_log_booking ON change_log (tenant_id, booking_id, seq) WHERE booking_id IS NOT NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON change_log TO pgtrack_tenant;
ALTER TABLE change_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON change_log
    USING (tenant_id = pgtrack_current_tenant()) WITH CHECK (tenant_id = pgtrack_current_tenant());

-- 2. How long each kind of data is kept. One row; `pgtrack maintain --set` or plain UPDATE
-- changes it, and every node's next maintenance pass follows.
CREATE TABLE maintenance_settings (
    id                         boolean PRIMARY KEY DEFAULT true CHECK (id),
    positions_retention_days   integer NOT NULL DEFAULT 30  CHECK (positions_retention_days BETWEEN 1 AND 3650),
    change_log_retention_hours integer NOT NULL DEFAULT 24  CHECK (change_log_retention_hours BETWEEN 1 AND 8760),
    rollup_retention_days      integer NOT NULL DEFAULT 365 CHECK (rollup_retention_days BETWEEN 1 AND 36500),
    track_retention_days       integer NOT NULL DEFAULT 365 CHECK (track_retention_days BETWEEN 1 AND 36500),
    -- Compact a raw positions partition into position_tracks before dropping it.
    compact_before_drop        boolean NOT NULL DEFAULT true,
    -- A segment longer than this is a gap in the data: its time is neither moving nor tracked.
    rollup_gap_seconds         integer NOT NULL DEFAULT 300 CHECK (rollup_gap_seconds BETWEEN 1 AND 86400),
    -- Reported speed (or implied speed without one) from which a segment counts as moving, m/s.
    rollup_moving_speed        double precision NOT NULL DEFAULT 1.0 CHECK (rollup_moving_speed BETWEEN 0 AND 100)
);
INSERT INTO maintenance_settings DEFAULT VALUES;

-- 3. Rollups per device: hourly and daily (UTC). Sums rather than averages are stored so a day
-- is exactly the sum of its hours. A segment (previous fix → fix) belongs to the bucket of
-- its later fix, so no distance is lost at bucket edges.
CREATE TABLE rollup_device_hourly (
    tenant_id        text NOT NULL,
    device_id        uuid NOT NULL,
    bucket           timestamptz NOT NULL,
    points           integer NOT NULL,
    distance_metres  double precision NOT NULL,
    moving_seconds   double precision NOT NULL,
    tracked_seconds  double precision NOT NULL,
    speed_sum        double precision NOT NULL,
    speed_count      integer NOT NULL,
    max_speed        double precision,
    first_fix        timestamptz NOT NULL,
    last_fix         timestamptz NOT NULL,
    min_lat          double precision NOT NULL,
    min_lon          double precision NOT NULL,
    max_lat          double precision NOT NULL,
    max_lon          double precision NOT NULL,
    refreshed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, device_id, bucket),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX rollup_device_hourly_bucket ON rollup_device_hourly (bucket);

CREATE TABLE rollup_device_daily (LIKE rollup_device_hourly INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE rollup_device_daily RENAME COLUMN bucket TO day;
ALTER TABLE rollup_device_daily ALTER COLUMN day TYPE date USING (day AT TIME ZONE 'UTC')::date,
    ADD PRIMARY KEY (tenant_id, device_id, day),
    ADD FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE;
CREATE INDEX rollup_device_daily_day ON rollup_device_daily (day);

-- How far into each tenant's change log the rollups have been brought (the continuous
-- aggregate's watermark). Seqs of a tenant commit in seq order, so everything at or below it
-- has been seen; late fixes arrive as new seqs and re-open the buckets they fall in.
CREATE TABLE rollup_watermarks (
    tenant_id    text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    last_seq     bigint NOT NULL DEFAULT 0,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

-- 4. Compacted history: one row per device and UTC hour of a raw partition compacted before it
-- was dropped. The track's vertices are the fixes in (fix_time, id) order, a Point when the
-- hour had one fix; times, speeds and headings are parallel arrays.
CREATE TABLE position_tracks (
    tenant_id   text NOT NULL,
    device_id   uuid NOT NULL,
    bucket      timestamptz NOT NULL,
    point_count integer NOT NULL CHECK (point_count > 0),
    track       geometry(Geometry, 4326) NOT NULL,
    fix_times   timestamptz[] NOT NULL,
    speeds      double precision[] NOT NULL,
    headings    double precision[] NOT NULL,
    PRIMARY KEY (tenant_id, device_id, bucket),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE,
    CHECK (cardinality(fix_times) = point_count AND cardinality(speeds) = point_count
           AND cardinality(headings) = point_count)
);
CREATE INDEX position_tracks_bucket ON position_tracks (bucket);


-- 5. Analysts. Their login roles are members of pgtrack_analyst, which may read the views of
-- schema analytics and nothing else. The views are owned by pgtrack_analytics, a role that
-- does not bypass row-level security: the policies below let it see exactly the rows of the
-- tenant mapped to the analyst running the query (current_user inside a view is the caller).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgtrack_analyst') THEN
        CREATE ROLE pgtrack_analyst NOLOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgtrack_analytics') THEN
        CREATE ROLE pgtrack_analytics NOLOGIN NOBYPASSRLS;
    END IF;
    -- The migrating user creates the views and hands them to pgtrack_analytics.
    IF NOT pg_has_role(current_user, 'pgtrack_analytics', 'MEMBER') THEN
        EXECUTE format('GRANT pgtrack_analytics TO %I', current_user);
    END IF;
END
$$;

-- Which tenant each analyst login role may read.
CREATE TABLE analyst_accounts (
    role_name  name PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The service's tenant role reads rollups and tracks like the rest of a tenant's data; the
-- maintenance pass (as the owner) writes them. Every table with a tenant_id has the policy.
GRANT SELECT ON rollup_device_hourly, rollup_device_daily TO pgtrack_tenant;
GRANT SELECT, DELETE ON position_tracks TO pgtrack_tenant;  -- a purge removes the device's tracks
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rollup_device_hourly', 'rollup_device_daily', 'rollup_watermarks', 'position_tracks',
                             'analyst_accounts'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = pgtrack_current_tenant()) '
                       'WITH CHECK (tenant_id = pgtrack_current_tenant())', t);
    END LOOP;
END
$$;

CREATE SCHEMA analytics;
GRANT USAGE ON SCHEMA analytics TO pgtrack_analyst;

-- Until now every tenant_isolation policy applied to all roles, keyed on a setting any session
-- may set. Narrow them to the service's tenant role, so the analytics owner (and anyone else)
-- is bound only by the policies written for it.
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT schemaname, tablename FROM pg_policies WHERE policyname = 'tenant_isolation' LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %I.%I TO pgtrack_tenant', p.schemaname, p.tablename);
    END LOOP;
END
$$;
