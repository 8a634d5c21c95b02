-- Trips as SQL functions and triggers, so a program speaking SQL gets the same lifecycle, the
-- same auto-attached positions and the same pushes as the REST API.

-- One stop of a trip, as listed in its JSON.
CREATE OR REPLACE FUNCTION pgtrack_trip_stop_json(location geography, started timestamptz, ended timestamptz) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'start', to_char(started AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'end', to_char(ended AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'latitude', round(ST_Y(location::geometry)::numeric, 7)::float8,
        'longitude', round(ST_X(location::geometry)::numeric, 7)::float8,
        'duration_seconds', extract(epoch FROM ended - started)::float8)
$$;

-- The JSON of a trip: status, times, route metadata and the last position. Shared by the REST
-- API and `status` events. A stationary spell still open at the last point and longer than the
-- stop time is listed as a stop: with "ongoing": true while the trip runs, as a closed one once
-- it ended (the spell stays in the row, so points absorbed later extend it exactly as a
-- recomputation would).
CREATE OR REPLACE FUNCTION pgtrack_trip_json(t trips) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'booking_id', t.booking_id,
        'device_id', t.device_id,
        'status', t.status,
        'accepted_at', pgtrack_iso_time(t.accepted_at),
        'started_at', pgtrack_iso_time(t.started_at),
        'completed_at', pgtrack_iso_time(t.completed_at),
        'cancelled_at', pgtrack_iso_time(t.cancelled_at),
        'first_fix_at', pgtrack_iso_time(t.first_fix_at),
        'last_fix_at', pgtrack_iso_time(t.last_fix_at)
    )) || jsonb_build_object(
        'point_count', t.point_count,
        'distance_metres', round(t.distance_metres::numeric, 1)::float8,
        'duration_seconds', coalesce(extract(epoch FROM t.last_fix_at - t.first_fix_at), 0)::float8,
        'max_speed', t.max_speed,
        -- Over the whole trip, stops included: distance / duration.
        'avg_speed', CASE WHEN t.last_fix_at > t.first_fix_at
                          THEN round((t.distance_metres / extract(epoch FROM t.last_fix_at - t.first_fix_at))::numeric, 3)::float8
                     END,
        -- GeoJSON order: west, south, east, north.
        'bbox', CASE WHEN t.min_lon IS NOT NULL THEN jsonb_build_array(t.min_lon, t.min_lat, t.max_lon, t.max_lat) END,
        'last_position', CASE WHEN t.last_location IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
                             'latitude', round(ST_Y(t.last_location::geometry)::numeric, 7)::float8,
                             'longitude', round(ST_X(t.last_location::geometry)::numeric, 7)::float8,
                             'timestamp', pgtrack_iso_time(t.last_fix_at),
                             'speed', t.last_speed,
                             'heading', t.last_heading)) END,
        'stops', t.stops || CASE
                     WHEN t.spell_since IS NOT NULL AND t.last_fix_at - t.spell_since >= make_interval(secs => t.stop_seconds)
                     THEN jsonb_build_array(pgtrack_trip_stop_json(t.spell_location, t.spell_since, t.last_fix_at)
                                            || CASE WHEN t.status IN ('accepted', 'in_progress')
                                                    THEN '{"ongoing": true}'::jsonb ELSE '{}'::jsonb END)
                     ELSE '[]'::jsonb END,
        'settings', jsonb_build_object('jitter_metres', t.jitter_metres, 'stop_radius_metres', t.stop_radius_metres,
                                       'stop_seconds', t.stop_seconds))
$$;


-- A trip's points are the positions of its device that name its booking, whenever they
-- arrive: before the accept (absorbed by it), while it runs, and after it ended (a phone that
-- was offline uploads its buffer late). The route queries read the same set.
--
-- Advances a trip's metadata over its points that come after the last one absorbed, in
-- (fix_time, id) order; with p_rebuild, starts over from the first point (a late point arrived
-- before the last one absorbed, or history was purged). One algorithm for both, so the running
-- figures always equal a recomputation from the stored points:
--   distance: geodesic metres from the anchor to a point, counted (and the anchor moved) only
--             when at least jitter_metres, so a parked device's GPS noise adds nothing;
--   stops:    a spell starts at a point; it lasts while later points stay within
--             stop_radius_metres of it; a spell of at least stop_seconds is a stop.
-- p_rows, when the caller has them, are the trip's points just inserted (none filtered): they
-- are absorbed as they are, without reading positions back. Otherwise the points come from
-- positions, read through the partitions holding p_from..p_to when the caller knows the range.
-- Reading positions back was most of a booked fix's insert cost: planning and opening all 38 day
-- partitions (the default retention) for every call.
-- Returns the trip's point count afterwards (0: it has no point yet).
DROP FUNCTION IF EXISTS pgtrack_trip_advance(text, text, boolean);
DROP FUNCTION IF EXISTS pgtrack_trip_advance(text, text, boolean, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS pgtrack_trip_advance(text, text, boolean, timestamptz, timestamptz, positions[]);
CREATE OR REPLACE FUNCTION pgtrack_trip_advance(p_tenant text, p_booking text, p_rebuild boolean,
                                                p_from timestamptz DEFAULT '-infinity',
                                                p_to timestamptz DEFAULT 'infinity',
                                                p_rows positions[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
-- Planned as usual even when called from the positions triggers, whose
-- `plan_cache_mode = force_generic_plan` would otherwise apply here too: a generic plan made
-- while a day's partition of positions is new and never analyzed may scan it sequentially
-- for the rest of the session (see pgtrack_notify_logged_many).
SET plan_cache_mode = auto
AS $$
DECLARE
    t trips%ROWTYPE;
    p record;
    hop double precision;
    points refcursor;
BEGIN
    SELECT * INTO t FROM trips WHERE tenant_id = p_tenant AND booking_id = p_booking FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF p_rebuild THEN
        t.point_count := 0; t.distance_metres := 0; t.first_fix_at := NULL; t.last_fix_at := NULL;
        t.last_position_id := NULL; t.last_location := NULL; t.last_speed := NULL; t.last_heading := NULL;
        t.max_speed := NULL; t.min_lat := NULL; t.min_lon := NULL; t.max_lat := NULL; t.max_lon := NULL;
        t.anchor_location := NULL; t.spell_location := NULL; t.spell_since := NULL; t.stops := '[]'::jsonb;
    END IF;
    IF p_rows IS NOT NULL THEN
        OPEN points FOR
            SELECT r.id, r.fix_time, r.location, r.speed, r.heading,
                   ST_Y(r.location::geometry) AS lat, ST_X(r.location::geometry) AS lon
              FROM unnest(p_rows) r
             WHERE r.booking_id = p_booking AND r.device_id = t.device_id AND r.filter_reason IS NULL
               AND (t.last_fix_at IS NULL OR (r.fix_time, r.id) > (t.last_fix_at, t.last_position_id))
             ORDER BY r.fix_time, r.id;
    ELSE
        OPEN points FOR
            SELECT id, fix_time, location, speed, heading,
                   ST_Y(location::geometry) AS lat, ST_X(location::geometry) AS lon
              FROM positions
             WHERE tenant_id = p_tenant AND booking_id = p_booking AND device_id = t.device_id
               AND filter_reason IS NULL  -- a filtered fix (SQL/035) is no point of the route
               AND fix_time BETWEEN p_from AND p_to
               AND (t.last_fix_at IS NULL OR (fix_time, id) > (t.last_fix_at, t.last_position_id))
             ORDER BY fix_time, id;
    END IF;
    LOOP
        FETCH points INTO p;
        EXIT WHEN NOT FOUND;
        IF t.anchor_location IS NULL THEN
            t.anchor_location := p.location;
            t.first_fix_at := p.fix_time;
        ELSE
            hop := ST_Distance(t.anchor_location, p.location);
            IF hop >= t.jitter_metres THEN
                t.distance_metres := t.distance_metres + hop;
                t.anchor_location := p.location;
            END IF;
        END IF;

        IF t.spell_location IS NULL THEN
            t.spell_location := p.location;
            t.spell_since := p.fix_time;
        ELSIF ST_Distance(t.spell_location, p.location) > t.stop_radius_metres THEN
            -- Left the spot: the spell ended at the previous point.
            IF t.last_fix_at - t.spell_since >= make_interval(secs => t.stop_seconds) THEN
                t.stops := t.stops || jsonb_build_array(pgtrack_trip_stop_json(t.spell_location, t.spell_since, t.last_fix_at));
            END IF;
            t.spell_location := p.location;
            t.spell_since := p.fix_time;
        END IF;

        t.point_count := t.point_count + 1;
        t.last_fix_at := p.fix_time;
        t.last_position_id := p.id;
        t.last_location := p.location;
        t.last_speed := p.speed;
        t.last_heading := p.heading;
        t.max_speed := greatest(t.max_speed, p.speed);
        t.min_lat := least(t.min_lat, p.lat);
        t.max_lat := greatest(t.max_lat, p.lat);
        t.min_lon := least(t.min_lon, p.lon);
        t.max_lon := greatest(t.max_lon, p.lon);
    END LOOP;
    CLOSE points;

    UPDATE trips SET
        point_count = t.point_count, distance_metres = t.distance_metres, first_fix_at = t.first_fix_at,
        last_fix_at = t.last_fix_at, last_position_id = t.last_position_id, last_location = t.last_location,
        last_speed = t.last_speed, last_heading = t.last_heading, max_speed = t.max_speed,
        min_lat = t.min_lat, min_lon = t.min_lon, max_lat = t.max_lat, max_lon = t.max_lon,
        anchor_location = t.anchor_location, spell_location = t.spell_location, spell_since = t.spell_since,
        stops = t.stops
     WHERE tenant_id = p_tenant AND booking_id = p_booking;
    RETURN t.point_count;
END
$$;

-- Logs a trip's `status` event (booking and tenant channels) with the trip as it is now.
CREATE OR REPLACE FUNCTION pgtrack_trip_log_status(p_tenant text, p_booking text, p_previous text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t trips%ROWTYPE;
BEGIN
    SELECT * INTO t FROM trips WHERE tenant_id = p_tenant AND booking_id = p_booking;
    RETURN pgtrack_log_event(p_tenant, 'status', t.device_id, t.booking_id,
                             jsonb_build_object('previous_status', p_previous) || pgtrack_trip_json(t));
END
$$;

-- The outcome of a lifecycle call: 'created' or 'changed' (done, event logged), 'unchanged'
-- (already so: an idempotent repeat), 'conflict' (not allowed from the current status, or
-- another device's booking), 'device_busy' (the device runs another trip, named in `other`),
-- 'not_found' (no such trip, or no such device for accept).

-- Accepts a booking for a device: creates its trip. Repeating it for the same device while the
-- trip runs changes nothing.
CREATE OR REPLACE FUNCTION pgtrack_trip_accept(p_tenant text, p_booking text, p_device uuid)
RETURNS pgtrack_trip_outcome
LANGUAGE plpgsql AS $$
DECLARE
    t trips%ROWTYPE;
    busy text;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT * INTO t FROM trips WHERE tenant_id = p_tenant AND booking_id = p_booking FOR UPDATE;
        IF FOUND THEN
            IF t.device_id = p_device AND t.status IN ('accepted', 'in_progress') THEN
                RETURN ROW('unchanged', t.status, pgtrack_trip_json(t), NULL)::pgtrack_trip_outcome;
            END IF;
            RETURN ROW('conflict', t.status, pgtrack_trip_json(t), NULL)::pgtrack_trip_outcome;
        END IF;
        PERFORM 1 FROM devices WHERE id = p_device AND tenant_id = p_tenant;
        IF NOT FOUND THEN
            RETURN ROW('not_found', NULL, NULL, NULL)::pgtrack_trip_outcome;
        END IF;
        SELECT booking_id INTO busy FROM trips
         WHERE device_id = p_device AND tenant_id = p_tenant AND status IN ('accepted', 'in_progress');
        IF FOUND THEN
            RETURN ROW('device_busy', NULL, NULL, busy)::pgtrack_trip_outcome;
        END IF;
        INSERT INTO trips (tenant_id, booking_id, device_id, jitter_metres, stop_radius_metres, stop_seconds)
        SELECT id, p_booking, p_device, trip_jitter_metres, trip_stop_radius_metres, trip_stop_seconds
          FROM tenants WHERE id = p_tenant
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            -- Fixes that named this booking before it was accepted are its first points.
            PERFORM pgtrack_trip_advance(p_tenant, p_booking, false);
            PERFORM pgtrack_trip_log_status(p_tenant, p_booking, NULL);
            SELECT * INTO t FROM trips WHERE tenant_id = p_tenant AND booking_id = p_booking;
            RETURN ROW('created', t.status, pgtrack_trip_json(t), NULL)::pgtrack_trip_outcome;
        END IF;
        -- A concurrent accept of this booking or this device won the race: decide again.
    END LOOP;
    RETURN ROW('conflict', NULL, NULL, NULL)::pgtrack_trip_outcome;
END
$$;

-- Ends a running trip: 'completed' (from in_progress) or 'cancelled' (from accepted or
-- in_progress). A stationary spell still open at the end is listed as a closed stop from then on.
CREATE OR REPLACE FUNCTION pgtrack_trip_finish(p_tenant text, p_booking text, p_status text)
RETURNS pgtrack_trip_outcome
LANGUAGE plpgsql AS $$
DECLARE
    t trips%ROWTYPE;
    previous text;
BEGIN
    IF p_status NOT IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'a trip finishes as completed or cancelled, not %', p_status USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO t FROM trips WHERE tenant_id = p_tenant AND booking_id = p_booking FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ROW('not_found', NULL, NULL, NULL)::pgtrack_trip_outcome;
    END IF;
    IF t.status = p_status THEN
        RETURN ROW('unchanged', t.status, pgtrack_trip_json(t), NULL)::pgtrack_trip_outcome;
    END IF;
    IF t.status IN ('completed', 'cancelled') OR (p_status = 'completed' AND t.status <> 'in_progress') THEN
        RETURN ROW('conflict', t.status, pgtrack_trip_json(t), NULL)::pgtrack_trip_outcome;
    END IF;
    previous := t.status;
    UPDATE trips SET
        status = p_status,
        completed_at = CASE WHEN p_status = 'completed' THEN now() END,
        cancelled_at = CASE WHEN p_status = 'cancelled' THEN now() END
     WHERE tenant_id = p_tenant AND booking_id = p_booking
    RETURNING * INTO t;
    PERFORM pgtrack_trip_log_status(p_tenant, p_booking, previous);
    RETURN ROW('changed', t.status, pgtrack_trip_json(t), NULL)::pgtrack_trip_outcome;
END
$$;

-- A position without a booking, from a device running a trip, belongs to that trip.
-- The REST ingest (pgtrack_ingest_positions, SQL/036) attaches its rows itself, in the
-- INSERT's own SELECT, and says so by setting pgtrack.trips_attached to its statement's start
-- time for the length of that statement: a plpgsql call per row is dear next to one join
-- (pgtrack bench's 100-fix ingest, same binary and cluster, went from 27.1–28.1k to
-- 30.6–31.7k positions/s with only this change in SQL/). Every other writer still gets the
-- trigger. The WHEN clause formats statement_timestamp() per row (added after that
-- measurement, against a value left behind; the same bench then gave 28.3–31.2k).
CREATE OR REPLACE FUNCTION pgtrack_positions_attach_trip() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT booking_id INTO NEW.booking_id FROM trips
     WHERE device_id = NEW.device_id AND tenant_id = NEW.tenant_id AND status IN ('accepted', 'in_progress');
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS positions_attach_trip ON positions;
CREATE TRIGGER positions_attach_trip BEFORE INSERT ON positions
    FOR EACH ROW WHEN (NEW.booking_id IS NULL
                       AND current_setting('pgtrack.trips_attached', true) IS DISTINCT FROM statement_timestamp()::text)
    EXECUTE FUNCTION pgtrack_positions_attach_trip();

-- After the positions are logged (the trigger named positions_after_insert fires first: AFTER
-- triggers run in name order), advance each trip they belong to, ended ones included; the
-- first point of an accepted trip starts it (a fix the filters rejected is no point). A point
-- older than the last one absorbed rebuilds the trip.
CREATE OR REPLACE FUNCTION pgtrack_positions_after_insert_trips() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan  -- as pgtrack_positions_after_insert (SQL/030)
AS $$
DECLARE
    trip   record;
    points integer;
    -- Tenants whose fixes may have been judged (flagged or dropped) by the filters (SQL/035):
    -- their points are read back from positions, where the verdict is; new_rows predates it.
    judged text[];
BEGIN
    judged := ARRAY(SELECT t.id FROM tenants t
                     WHERE t.id IN (SELECT DISTINCT tenant_id FROM new_rows WHERE booking_id IS NOT NULL)
                       AND (pgtrack_filters_enabled(t)
                            OR EXISTS (SELECT 1 FROM new_rows r WHERE r.tenant_id = t.id AND r.filter_reason IS NOT NULL)));
    FOR trip IN
        SELECT t.tenant_id, t.booking_id, t.status,
               t.last_fix_at IS NOT NULL AND bool_or((n.fix_time, n.id) <= (t.last_fix_at, t.last_position_id)) AS late,
               min(n.fix_time) AS earliest, max(n.fix_time) AS newest,
               CASE WHEN t.tenant_id <> ALL (judged) THEN array_agg(ROW(n.*)::positions) END AS points
          FROM new_rows n
          JOIN trips t ON t.tenant_id = n.tenant_id AND t.booking_id = n.booking_id AND t.device_id = n.device_id
         WHERE n.booking_id IS NOT NULL
         GROUP BY t.tenant_id, t.booking_id, t.status, t.last_fix_at, t.last_position_id
         ORDER BY t.tenant_id, t.booking_id
    LOOP
        -- In time order, every point the trip has not absorbed is one of these rows (earlier ones
        -- were absorbed when they were inserted, or by pgtrack_trip_accept); a late one rebuilds.
        IF trip.late THEN
            points := pgtrack_trip_advance(trip.tenant_id, trip.booking_id, true);
        ELSE
            points := pgtrack_trip_advance(trip.tenant_id, trip.booking_id, false, trip.earliest, trip.newest, trip.points);
        END IF;
        -- Only a point starts the trip: fixes the filters rejected are none (SQL/035).
        IF trip.status = 'accepted' AND points > 0 THEN
            UPDATE trips SET status = 'in_progress', started_at = now()
             WHERE tenant_id = trip.tenant_id AND booking_id = trip.booking_id;
            PERFORM pgtrack_trip_log_status(trip.tenant_id, trip.booking_id, 'accepted');
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS positions_after_insert_trips ON positions;
CREATE TRIGGER positions_after_insert_trips AFTER INSERT ON positions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_positions_after_insert_trips();
