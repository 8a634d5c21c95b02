-- Schema analytics: documented views for analysts' SQL, readable by the pgtrack_analyst role
-- and nothing else. The views belong to pgtrack_analytics, which reads the base tables under
-- the analytics_read policies below: the rows of the tenant mapped to the analyst who runs the
-- query. Re-created on every change of SQL/ (views cannot drop columns in place).

-- The tenant of the analyst logged in to this session (session_user: a SET ROLE does not
-- change it), or NULL for anyone who is not an analyst. SECURITY DEFINER so analysts need no
-- access to analyst_accounts.
CREATE OR REPLACE FUNCTION pgtrack_analyst_tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT tenant_id FROM analyst_accounts WHERE role_name = session_user
$$;

-- Analysts are read-only by privileges, not by their session defaults: a role's
-- default_transaction_read_only and statement_timeout are defaults the analyst may SET off
-- (even ALTER ROLE itself). pgtrack_analyst is granted nothing but SELECT on the views, and
-- pgtrack's functions (SECURITY INVOKER, but pgtrack_analyst_tenant) run with the caller's
-- privileges; what PUBLIC may do in every database is taken back here for pgtrack's:
-- TEMPORARY on the database (temp tables, views and functions: writes that fill the disk
-- unbounded), CREATE on schema public (PostgreSQL 15 no longer grants it, a database upgraded
-- from an older one still does) and creating large objects (lo_create and friends need no
-- privilege, not even outside a read-only transaction). The database's privileges are the
-- owner's to change and the large-object functions a superuser's: run by anyone else, a
-- REVOKE changes nothing, and this says so.
CREATE OR REPLACE FUNCTION pgtrack_analyst_lockdown() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) FROM PUBLIC;
    END IF;
    IF has_database_privilege('pgtrack_analyst', current_database(), 'CREATE, TEMPORARY') THEN
        RAISE WARNING 'analysts can create temporary tables in database %: as its owner, REVOKE TEMPORARY ON DATABASE % FROM PUBLIC',
            current_database(), quote_ident(current_database());
    END IF;
    IF has_function_privilege('pgtrack_analyst', 'lo_create(oid)', 'EXECUTE') THEN
        RAISE WARNING 'analysts can create large objects: as a superuser, REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) FROM PUBLIC';
    END IF;
END
$$;

-- Creates an analyst login role for one tenant: member of pgtrack_analyst, at most 10
-- connections (only a CREATEROLE role can change that), and session defaults of read-only, a
-- 5-minute statement timeout and a 5-minute limit on idling inside a transaction (whose locks
-- would block dropping expired partitions). The lock-down runs again here because a database
-- created from a template does not inherit the template's database privileges.
-- Raises unique_violation when the role exists.
CREATE OR REPLACE FUNCTION pgtrack_create_analyst(p_tenant text, p_role text, p_password text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_role !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'analyst role name must be lowercase letters, digits and _ (at most 63), starting with a letter or _'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenants WHERE id = p_tenant) THEN
        RAISE EXCEPTION 'tenant % does not exist', p_tenant USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
        RAISE EXCEPTION 'role % already exists', p_role USING ERRCODE = 'unique_violation';
    END IF;
    PERFORM pgtrack_analyst_lockdown();
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L CONNECTION LIMIT 10 IN ROLE pgtrack_analyst', p_role, p_password);
    EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', p_role, '5min');
    EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', p_role, '5min');
    EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', p_role);
    INSERT INTO analyst_accounts (role_name, tenant_id) VALUES (p_role, p_tenant);
END
$$;

DO $$
BEGIN
    PERFORM pgtrack_analyst_lockdown();
END
$$;

-- Analysts created before the idle-in-transaction limit get it too (once: a role that has the
-- setting is left as it is).
DO $$
DECLARE
    r name;
BEGIN
    FOR r IN SELECT a.role_name FROM analyst_accounts a JOIN pg_roles o ON o.rolname = a.role_name
              WHERE NOT EXISTS (SELECT 1 FROM pg_db_role_setting s
                                 WHERE s.setrole = o.oid AND s.setdatabase = 0
                                   AND s.setconfig::text LIKE '%idle_in_transaction_session_timeout=%') LOOP
        BEGIN
            EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', r, '5min');
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'analyst %: no idle_in_transaction_session_timeout (%)', r, SQLERRM;
        END;
    END LOOP;
END
$$;

-- Removes an analyst role and its mapping. Returns false when there was no such analyst.
CREATE OR REPLACE FUNCTION pgtrack_drop_analyst(p_role text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM analyst_accounts WHERE role_name = p_role;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP ROLE IF EXISTS %I', p_role);
    RETURN true;
END
$$;

-- What the view owner may read, and which rows.
GRANT USAGE ON SCHEMA sync TO pgtrack_analytics;
GRANT USAGE, CREATE ON SCHEMA analytics TO pgtrack_analytics;
GRANT SELECT ON tenants, devices, positions, latest_positions, trips, rollup_device_hourly, rollup_device_daily,
                position_tracks, drivers, routes, visits, sync.sync_state, sync.customers
   TO pgtrack_analytics;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['devices', 'positions', 'latest_positions', 'trips', 'rollup_device_hourly',
                             'rollup_device_daily', 'position_tracks', 'drivers', 'routes', 'visits', 'sync.sync_state',
                             'sync.customers'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS analytics_read ON %s', t);
        EXECUTE format('CREATE POLICY analytics_read ON %s FOR SELECT TO pgtrack_analytics '
                       'USING (tenant_id = (SELECT pgtrack_analyst_tenant()))', t);
    END LOOP;
END
$$;
DROP POLICY IF EXISTS analytics_read ON tenants;
CREATE POLICY analytics_read ON tenants FOR SELECT TO pgtrack_analytics USING (id = (SELECT pgtrack_analyst_tenant()));

DROP VIEW IF EXISTS analytics.latest_positions, analytics.positions, analytics.trips, analytics.device_hourly_stats,
                    analytics.device_daily_stats, analytics.device_tracks, analytics.sync_lag,
                    analytics.driver_daily_stats, analytics.visit_completions;

-- The newest fix of every device, GeoJSON-ready: `feature` is a GeoJSON Feature, so
-- jsonb_build_object('type','FeatureCollection','features', jsonb_agg(feature)) is a map layer.
CREATE VIEW analytics.latest_positions AS
SELECT lp.tenant_id, lp.device_id, d.name AS device_name, d.group_name, lp.booking_id, lp.fix_time, lp.received_at,
       ST_Y(lp.location::geometry) AS latitude, ST_X(lp.location::geometry) AS longitude,
       lp.speed, lp.heading, lp.altitude, lp.accuracy, lp.battery, lp.attributes, lp.location,
       jsonb_build_object('type', 'Feature', 'geometry', ST_AsGeoJSON(lp.location, 6)::jsonb,
                          'properties', jsonb_strip_nulls(jsonb_build_object(
                              'device_id', lp.device_id, 'device_name', d.name, 'group', d.group_name,
                              'booking_id', lp.booking_id, 'timestamp', pgtrack_iso_time(lp.fix_time),
                              'speed', lp.speed, 'heading', lp.heading, 'battery', lp.battery))) AS feature
  FROM latest_positions lp
  JOIN devices d ON d.id = lp.device_id AND d.tenant_id = lp.tenant_id;

-- Raw fixes (as long as the positions retention keeps them); filter on fix_time to read only
-- the days you need.
CREATE VIEW analytics.positions AS
SELECT p.tenant_id, p.device_id, d.name AS device_name, p.booking_id, p.fix_time, p.received_at,
       ST_Y(p.location::geometry) AS latitude, ST_X(p.location::geometry) AS longitude,
       p.speed, p.heading, p.altitude, p.accuracy, p.battery, p.attributes, p.location,
       p.filter_reason  -- NULL: accepted; else the fix filter that rejected it (README "Fix filters")
  FROM positions p
  JOIN devices d ON d.id = p.device_id AND d.tenant_id = p.tenant_id;

-- Trips with their route metadata (distance in metres, speeds in m/s, times in UTC).
CREATE VIEW analytics.trips AS
SELECT t.tenant_id, t.booking_id, t.device_id, d.name AS device_name, t.status,
       t.accepted_at, t.started_at, t.completed_at, t.cancelled_at,
       t.point_count, t.distance_metres, t.first_fix_at, t.last_fix_at,
       coalesce(extract(epoch FROM t.last_fix_at - t.first_fix_at), 0)::float8 AS duration_seconds,
       t.max_speed,
       CASE WHEN t.last_fix_at > t.first_fix_at
            THEN t.distance_metres / extract(epoch FROM t.last_fix_at - t.first_fix_at)::float8 END AS avg_speed,
       jsonb_array_length(t.stops) AS stop_count, t.stops,
       t.min_lat, t.min_lon, t.max_lat, t.max_lon,
       ST_Y(t.last_location::geometry) AS last_latitude, ST_X(t.last_location::geometry) AS last_longitude
  FROM trips t
  JOIN devices d ON d.id = t.device_id AND d.tenant_id = t.tenant_id;

-- Per device and UTC hour: fixes, distance (sum of geodesic segments; a segment belongs to
-- the hour of its later fix), moving time (segments at or above rollup_moving_speed, gaps
-- longer than rollup_gap_seconds excluded) and its share of the tracked time, speeds, bbox.
CREATE VIEW analytics.device_hourly_stats AS
SELECT h.tenant_id, h.device_id, d.name AS device_name, h.bucket AS hour, h.points, h.distance_metres,
       h.moving_seconds, h.tracked_seconds,
       CASE WHEN h.tracked_seconds > 0 THEN round((100 * h.moving_seconds / h.tracked_seconds)::numeric, 2)::float8 END
           AS moving_percent,
       h.max_speed, CASE WHEN h.speed_count > 0 THEN h.speed_sum / h.speed_count END AS avg_speed,
       h.first_fix, h.last_fix, h.min_lat, h.min_lon, h.max_lat, h.max_lon
  FROM rollup_device_hourly h
  JOIN devices d ON d.id = h.device_id AND d.tenant_id = h.tenant_id;

-- The same per UTC day (exactly the sum of the day's hours).
CREATE VIEW analytics.device_daily_stats AS
SELECT r.tenant_id, r.device_id, d.name AS device_name, r.day, r.points, r.distance_metres,
       r.moving_seconds, r.tracked_seconds,
       CASE WHEN r.tracked_seconds > 0 THEN round((100 * r.moving_seconds / r.tracked_seconds)::numeric, 2)::float8 END
           AS moving_percent,
       r.max_speed, CASE WHEN r.speed_count > 0 THEN r.speed_sum / r.speed_count END AS avg_speed,
       r.first_fix, r.last_fix, r.min_lat, r.min_lon, r.max_lat, r.max_lon
  FROM rollup_device_daily r
  JOIN devices d ON d.id = r.device_id AND d.tenant_id = r.tenant_id;

-- Per driver and UTC day: the daily rollup of the driver's device (the device linked to the
-- driver now) plus the visits of the driver's routes completed that day.
CREATE VIEW analytics.driver_daily_stats AS
WITH completed AS (
    SELECT r.tenant_id, r.driver_id, (v.completed_at AT TIME ZONE 'UTC')::date AS day, count(*) AS visits_completed
      FROM visits v
      JOIN routes r ON r.id = v.route_id AND r.tenant_id = v.tenant_id
     WHERE v.completed_at IS NOT NULL
     GROUP BY 1, 2, 3
), days AS (
    SELECT dr.tenant_id, dr.id AS driver_id, r.day
      FROM drivers dr JOIN rollup_device_daily r ON r.device_id = dr.device_id AND r.tenant_id = dr.tenant_id
    UNION
    SELECT tenant_id, driver_id, day FROM completed
)
SELECT d.tenant_id, d.driver_id, dr.name AS driver_name, d.day,
       coalesce(r.points, 0) AS points, coalesce(r.distance_metres, 0) AS distance_metres,
       coalesce(r.moving_seconds, 0) AS moving_seconds, coalesce(r.tracked_seconds, 0) AS tracked_seconds,
       CASE WHEN r.tracked_seconds > 0 THEN round((100 * r.moving_seconds / r.tracked_seconds)::numeric, 2)::float8 END
           AS moving_percent,
       r.max_speed, CASE WHEN r.speed_count > 0 THEN r.speed_sum / r.speed_count END AS avg_speed,
       r.first_fix, r.last_fix, coalesce(c.visits_completed, 0) AS visits_completed
  FROM days d
  JOIN drivers dr ON dr.id = d.driver_id AND dr.tenant_id = d.tenant_id
  LEFT JOIN rollup_device_daily r ON r.device_id = dr.device_id AND r.tenant_id = d.tenant_id AND r.day = d.day
  LEFT JOIN completed c ON c.driver_id = d.driver_id AND c.day = d.day;

-- Every planned visit with its plan (route, sequence, time window) beside what happened: arrival,
-- start, completion and departure times, dwell (arrival to departure, or to completion while
-- not departed), whether the arrival fell inside the window and how late it was.
CREATE VIEW analytics.visit_completions AS
SELECT v.tenant_id, v.id AS visit_id, v.route_id, r.name AS route_name, r.scheduled_date, r.driver_id,
       dr.name AS driver_name, v.customer_id, c.name AS customer_name, v.sequence, v.visit_type, v.status,
       v.window_start, v.window_end, v.arrived_at, v.started_at, v.completed_at, v.departed_at,
       extract(epoch FROM coalesce(v.departed_at, v.completed_at) - v.arrived_at)::float8 AS dwell_seconds,
       CASE WHEN v.arrived_at IS NOT NULL
            THEN (v.window_start IS NULL OR v.arrived_at >= v.window_start)
                 AND (v.window_end IS NULL OR v.arrived_at <= v.window_end) END AS arrived_in_window,
       CASE WHEN v.arrived_at IS NOT NULL AND v.window_end IS NOT NULL
            THEN greatest(extract(epoch FROM v.arrived_at - v.window_end)::float8, 0) END AS late_seconds
  FROM visits v
  JOIN routes r ON r.id = v.route_id AND r.tenant_id = v.tenant_id
  JOIN drivers dr ON dr.id = r.driver_id AND dr.tenant_id = r.tenant_id
  LEFT JOIN sync.customers c ON c.tenant_id = v.tenant_id AND c.id = v.customer_id;

-- Compacted history (raw days compacted before they were dropped): one row per device and hour.
CREATE VIEW analytics.device_tracks AS
SELECT t.tenant_id, t.device_id, d.name AS device_name, t.bucket AS hour, t.point_count, t.track,
       ST_AsGeoJSON(t.track, 6)::jsonb AS geojson, t.fix_times, t.speeds, t.headings
  FROM position_tracks t
  JOIN devices d ON d.id = t.device_id AND d.tenant_id = t.tenant_id;

-- CDC replication lag per sync table, as /api/v1/sync/lag reports it.
CREATE VIEW analytics.sync_lag AS
SELECT tn.id AS tenant_id, tbl.name AS table_name, lag.seconds AS lag_seconds,
       pgtrack_sync_lag_status(lag.seconds) AS status, s.last_source_ts, s.last_applied_at,
       coalesce(s.events_applied, 0) AS events_applied, coalesce(s.events_skipped, 0) AS events_skipped,
       coalesce(s.errors, 0) AS errors, s.last_error
  FROM tenants tn
 CROSS JOIN unnest(pgtrack_sync_tables()) AS tbl(name)
  LEFT JOIN sync.sync_state s ON s.tenant_id = tn.id AND s.table_name = tbl.name
 -- No change applied yet: no lag (NULL, status no_data), not a lag of 0 (greatest() skips NULLs).
 CROSS JOIN LATERAL (SELECT CASE WHEN s.last_source_ts IS NOT NULL
                                 THEN greatest(extract(epoch FROM now() - s.last_source_ts)::float8, 0) END AS seconds) lag;

DO $$
DECLARE
    v text;
BEGIN
    FOREACH v IN ARRAY ARRAY['latest_positions', 'positions', 'trips', 'device_hourly_stats', 'device_daily_stats',
                             'driver_daily_stats', 'visit_completions', 'device_tracks', 'sync_lag'] LOOP
        EXECUTE format('ALTER VIEW analytics.%I OWNER TO pgtrack_analytics', v);
        EXECUTE format('GRANT SELECT ON analytics.%I TO pgtrack_analyst', v);
    END LOOP;
END
$$;
