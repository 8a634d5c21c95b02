-- Fleet operations: drivers, their routes and the planned visits of each route, enrichment of
-- every fix of a driver on an active route (next visit, distance, ETA) and geofence arrivals
-- and departures, all kept by the positions trigger (SQL/100_fleet.sql).

-- Part A of the fleet work (Migrations/0007) adds this column; the fleet functions only read it,
-- so this migration stands on its own: a fix with a filter_reason was rejected by the fix
-- filters and is neither enriched nor counted for geofences. NULL means accepted.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS filter_reason text;

-- Per-tenant fleet settings.
ALTER TABLE tenants
    -- Geofence radius of a customer whose synced record gives none.
    ADD COLUMN fleet_default_radius_metres   double precision NOT NULL DEFAULT 100 CHECK (fleet_default_radius_metres BETWEEN 5 AND 10000),
    -- A completed visit is departed once a fix is farther than radius + this margin: GPS jitter
    -- at the edge of the geofence never flips it.
    ADD COLUMN fleet_departure_margin_metres double precision NOT NULL DEFAULT 30  CHECK (fleet_departure_margin_metres BETWEEN 0 AND 5000),
    -- ETA = distance / max(average speed over the window, floor speed).
    ADD COLUMN fleet_speed_window_seconds    integer          NOT NULL DEFAULT 300 CHECK (fleet_speed_window_seconds BETWEEN 10 AND 86400),
    ADD COLUMN fleet_eta_floor_speed         double precision NOT NULL DEFAULT 2   CHECK (fleet_eta_floor_speed > 0 AND fleet_eta_floor_speed <= 100);

CREATE TABLE drivers (
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The device whose fixes are this driver's. A device drives for at most one driver.
    device_id     uuid,
    vehicle_plate text CHECK (length(vehicle_plate) BETWEEN 1 AND 20),
    vehicle_type  text CHECK (vehicle_type IN ('car', 'van', 'truck', 'motorcycle', 'bicycle', 'other')),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'on_leave')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE SET NULL (device_id)
);
CREATE UNIQUE INDEX drivers_device ON drivers (device_id) WHERE device_id IS NOT NULL;
CREATE INDEX drivers_tenant ON drivers (tenant_id, name);

CREATE TABLE routes (
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id             uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    driver_id      uuid NOT NULL,
    name           text CHECK (length(name) BETWEEN 1 AND 200),
    scheduled_date date NOT NULL,
    status         text NOT NULL DEFAULT 'planned' CHECK (status IN ('planned', 'in_progress', 'completed')),
    started_at     timestamptz,
    completed_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, driver_id) REFERENCES drivers (tenant_id, id) ON DELETE CASCADE
);
-- A driver drives one route at a time: the route their fixes are enriched against.
CREATE UNIQUE INDEX routes_one_active_per_driver ON routes (driver_id) WHERE status = 'in_progress';
CREATE INDEX routes_driver_date ON routes (tenant_id, driver_id, scheduled_date);

CREATE TABLE visits (
    tenant_id           text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                  uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    route_id            uuid NOT NULL,
    -- A customer of sync.customers (checked when the visit is created; no foreign key, because a
    -- CDC tombstone must not delete or block planned visits).
    customer_id         text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 200),
    sequence            integer NOT NULL CHECK (sequence BETWEEN 1 AND 10000),
    visit_type          text NOT NULL DEFAULT 'delivery' CHECK (visit_type IN ('delivery', 'pickup', 'service', 'inspection', 'other')),
    window_start        timestamptz,
    window_end          timestamptz,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'arrived', 'in_progress', 'completed', 'departed')),
    notes               text CHECK (length(notes) <= 2000),
    -- Arrival and departure times are the fix times of the fixes that crossed the geofence
    -- (or now() for a manual change); arrived_position_id is that fix.
    arrived_at          timestamptz,
    arrived_position_id bigint,
    started_at          timestamptz,
    completed_at        timestamptz,
    departed_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (route_id, sequence),
    CHECK (window_end IS NULL OR window_start IS NULL OR window_end >= window_start),
    FOREIGN KEY (tenant_id, route_id) REFERENCES routes (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX visits_route ON visits (route_id, sequence);

GRANT SELECT, INSERT, UPDATE, DELETE ON drivers, routes, visits TO pgtrack_tenant;
ALTER TABLE drivers ENABLE ROW LEVEL SECURITY;
ALTER TABLE routes ENABLE ROW LEVEL SECURITY;
ALTER TABLE visits ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON drivers TO pgtrack_tenant
    USING (tenant_id = pgtrack_current_tenant()) WITH CHECK (tenant_id = pgtrack_current_tenant());
CREATE POLICY tenant_isolation ON routes TO pgtrack_tenant
    USING (tenant_id = pgtrack_current_tenant()) WITH CHECK (tenant_id = pgtrack_current_tenant());
CREATE POLICY tenant_isolation ON visits TO pgtrack_tenant
    USING (tenant_id = pgtrack_current_tenant()) WITH CHECK (tenant_id = pgtrack_current_tenant());

-- Enrichment stored with the fix: the route it was driven on and, as of that fix, the next
-- visit, the geodesic distance to it and the ETA. Written by the positions trigger.
ALTER TABLE positions
    ADD COLUMN route_id           uuid,
    ADD COLUMN next_visit_id      uuid,
    ADD COLUMN distance_to_next_m double precision,
    ADD COLUMN eta_seconds        double precision;
CREATE INDEX positions_route_time ON positions (route_id, fix_time) WHERE route_id IS NOT NULL;

-- Route rooms (route:<id>) are the tenant's stream narrowed to the events of one route, as
-- device rooms narrow it to one device: the route rides along with each event's audience.
ALTER TABLE change_log ADD COLUMN route_id uuid;

-- One fix's enrichment, as pgtrack_fleet_process returns it to the positions trigger.
CREATE TYPE pgtrack_fleet_enrichment AS (
    position_id bigint, route_id uuid, next_visit_id uuid, distance_m double precision, eta_seconds double precision);
