-- Trips: one per booking, from acceptance to delivery or cancellation, with route metadata kept
-- up to date by the positions triggers (SQL/060_trips.sql) as points arrive.

-- Per-tenant trip settings. Each trip copies them when it is accepted, so changing a setting
-- never changes how a trip already under way is measured.
ALTER TABLE tenants
    ADD COLUMN trip_jitter_metres      double precision NOT NULL DEFAULT 10  CHECK (trip_jitter_metres BETWEEN 0 AND 1000),
    ADD COLUMN trip_stop_radius_metres double precision NOT NULL DEFAULT 30  CHECK (trip_stop_radius_metres BETWEEN 1 AND 5000),
    ADD COLUMN trip_stop_seconds       integer          NOT NULL DEFAULT 300 CHECK (trip_stop_seconds BETWEEN 10 AND 86400);

CREATE TABLE trips (
    tenant_id          text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    booking_id         text NOT NULL CHECK (booking_id ~ '^[A-Za-z0-9._:-]{1,40}$'),
    device_id          uuid NOT NULL,
    status             text NOT NULL DEFAULT 'accepted'
                       CHECK (status IN ('accepted', 'in_progress', 'completed', 'cancelled')),
    accepted_at        timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    cancelled_at       timestamptz,

    -- Settings copied from the tenant at acceptance.
    jitter_metres      double precision NOT NULL,
    stop_radius_metres double precision NOT NULL,
    stop_seconds       integer NOT NULL,

    -- Route metadata, advanced point by point in (fix_time, id) order.
    point_count        integer NOT NULL DEFAULT 0,
    distance_metres    double precision NOT NULL DEFAULT 0,
    first_fix_at       timestamptz,
    last_fix_at        timestamptz,
    last_position_id   bigint,
    last_location      geography(Point, 4326),
    last_speed         double precision,
    last_heading       double precision,
    max_speed          double precision,
    min_lat            double precision,
    min_lon            double precision,
    max_lat            double precision,
    max_lon            double precision,
    -- The last point that counted toward the distance: moves closer than jitter_metres to it
    -- are GPS noise, not travel.
    anchor_location    geography(Point, 4326),
    -- The current stationary spell: where and when the device last arrived somewhere it has not
    -- left by more than stop_radius_metres since.
    spell_location     geography(Point, 4326),
    spell_since        timestamptz,
    -- Finished stops: [{"start","end","latitude","longitude","duration_seconds"}].
    stops              jsonb NOT NULL DEFAULT '[]'::jsonb,

    PRIMARY KEY (tenant_id, booking_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);

-- A device runs at most one trip at a time: that is the trip its positions attach to.
CREATE UNIQUE INDEX trips_one_active_per_device ON trips (device_id) WHERE status IN ('accepted', 'in_progress');
CREATE INDEX trips_device ON trips (tenant_id, device_id, accepted_at DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON trips TO pgtrack_tenant;
ALTER TABLE trips ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON trips
    USING (tenant_id = pgtrack_current_tenant()) WITH CHECK (tenant_id = pgtrack_current_tenant());

-- What the trip lifecycle functions (SQL/060_trips.sql) answer; see pgtrack_trip_accept.
CREATE TYPE pgtrack_trip_outcome AS (outcome text, status text, trip jsonb, other text);
