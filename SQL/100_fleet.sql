-- Fleet operations (Migrations/0008_fleet.sql): JSON shapes, visit and route lifecycles, and the
-- enrichment and geofence work the positions trigger (SQL/030) hands to pgtrack_fleet_process.
--
-- Rooms: visit_update events are logged with the driver's device as their audience and the route
-- in change_log.route_id; location_update events of a fix driven on a route carry the route too.
-- WebSocket rooms driver:<id> and route:<id> are the tenant's stream narrowed to the driver's
-- device or to one route_id, like device rooms: no new NOTIFY channels (a route or driver channel
-- would need its own seq space or sparse-gap handling, and LISTEN churn per room), the tenant
-- channel's seqs stay contiguous, and resume-by-seq works exactly as for tenant rooms.

CREATE OR REPLACE FUNCTION pgtrack_driver_json(d drivers) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'id', d.id, 'name', d.name, 'device_id', d.device_id, 'vehicle_plate', d.vehicle_plate,
        'vehicle_type', d.vehicle_type, 'status', d.status,
        'created_at', pgtrack_iso_time(d.created_at), 'updated_at', pgtrack_iso_time(d.updated_at))
$$;

CREATE OR REPLACE FUNCTION pgtrack_route_json(r routes) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'driver_id', r.driver_id, 'name', r.name,
        'scheduled_date', to_char(r.scheduled_date, 'YYYY-MM-DD'), 'status', r.status,
        'started_at', pgtrack_iso_time(r.started_at), 'completed_at', pgtrack_iso_time(r.completed_at),
        'created_at', pgtrack_iso_time(r.created_at))
$$;

CREATE OR REPLACE FUNCTION pgtrack_visit_json(v visits) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'id', v.id, 'route_id', v.route_id, 'customer_id', v.customer_id, 'sequence', v.sequence,
        'visit_type', v.visit_type, 'status', v.status, 'notes', v.notes,
        'window_start', pgtrack_iso_time(v.window_start), 'window_end', pgtrack_iso_time(v.window_end),
        'arrived_at', pgtrack_iso_time(v.arrived_at), 'started_at', pgtrack_iso_time(v.started_at),
        'completed_at', pgtrack_iso_time(v.completed_at), 'departed_at', pgtrack_iso_time(v.departed_at),
        'created_at', pgtrack_iso_time(v.created_at))
$$;

-- Logs a visit_update (the visit as it is now, its previous status and what caused the change:
-- 'geofence' or 'manual'). The audience is the driver's device, so scoped viewers see the visit
-- events of the drivers they may see and driver:<id> rooms get them; route_id feeds route rooms.
-- The positions trigger passes p_notify false and rings once for its whole seq range. Callers
-- hold the tenant's change_log_heads row first (lock order: head, route, visits).
CREATE OR REPLACE FUNCTION pgtrack_fleet_log_visit(p_tenant text, p_visit uuid, p_previous text, p_cause text, p_notify boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    rec     record;
    new_seq bigint;
BEGIN
    SELECT v AS vis, v.route_id, r.driver_id, d.device_id, dv.group_name, dv.grade INTO rec
      FROM visits v
      JOIN routes r ON r.id = v.route_id
      JOIN drivers d ON d.id = r.driver_id
      LEFT JOIN devices dv ON dv.id = d.device_id
     WHERE v.id = p_visit AND v.tenant_id = p_tenant;
    UPDATE change_log_heads SET last_seq = last_seq + 1 WHERE tenant_id = p_tenant RETURNING last_seq INTO new_seq;
    INSERT INTO change_log (tenant_id, seq, kind, device_id, route_id, payload, device_group, device_grade)
    VALUES (p_tenant, new_seq, 'visit_update', rec.device_id, rec.route_id,
            jsonb_build_object('seq', new_seq, 'type', 'visit_update', 'previous_status', p_previous, 'cause', p_cause,
                               'driver_id', rec.driver_id, 'device_id', rec.device_id)
            || pgtrack_visit_json(rec.vis),
            rec.group_name, rec.grade);
    IF p_notify THEN
        PERFORM pgtrack_notify_logged(p_tenant, new_seq - 1, new_seq);
    END IF;
    RETURN new_seq;
END
$$;

-- The one status a visit may move to next, or NULL from departed.
CREATE OR REPLACE FUNCTION pgtrack_visit_next_status(status text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status WHEN 'pending' THEN 'arrived' WHEN 'arrived' THEN 'in_progress'
                       WHEN 'in_progress' THEN 'completed' WHEN 'completed' THEN 'departed' END
$$;

-- A manual visit status change. Answers {"outcome": "changed" | "unchanged" | "conflict" |
-- "not_found", "status": <current>, "allowed": <the one next status>, "visit": {...}}.
CREATE OR REPLACE FUNCTION pgtrack_visit_set_status(p_tenant text, p_visit uuid, p_status text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v visits%ROWTYPE;
    previous text;
BEGIN
    PERFORM 1 FROM change_log_heads WHERE tenant_id = p_tenant FOR UPDATE;
    SELECT * INTO v FROM visits WHERE id = p_visit AND tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'not_found');
    END IF;
    IF v.status = p_status THEN
        RETURN jsonb_build_object('outcome', 'unchanged', 'status', v.status, 'visit', pgtrack_visit_json(v));
    END IF;
    IF pgtrack_visit_next_status(v.status) IS DISTINCT FROM p_status THEN
        RETURN jsonb_build_object('outcome', 'conflict', 'status', v.status, 'allowed', pgtrack_visit_next_status(v.status),
                                  'visit', pgtrack_visit_json(v));
    END IF;
    previous := v.status;
    UPDATE visits SET status = p_status,
           arrived_at   = CASE WHEN p_status = 'arrived' THEN now() ELSE arrived_at END,
           started_at   = CASE WHEN p_status = 'in_progress' THEN now() ELSE started_at END,
           completed_at = CASE WHEN p_status = 'completed' THEN now() ELSE completed_at END,
           departed_at  = CASE WHEN p_status = 'departed' THEN now() ELSE departed_at END
     WHERE id = p_visit
    RETURNING * INTO v;
    PERFORM pgtrack_fleet_log_visit(p_tenant, p_visit, previous, 'manual', true);
    RETURN jsonb_build_object('outcome', 'changed', 'status', v.status, 'visit', pgtrack_visit_json(v));
END
$$;

-- A route status change: planned → in_progress → completed. A driver drives one route at a time
-- ('driver_busy' names the other one).
CREATE OR REPLACE FUNCTION pgtrack_route_set_status(p_tenant text, p_route uuid, p_status text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r routes%ROWTYPE;
    other uuid;
BEGIN
    SELECT * INTO r FROM routes WHERE id = p_route AND tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'not_found');
    END IF;
    IF r.status = p_status THEN
        RETURN jsonb_build_object('outcome', 'unchanged', 'status', r.status, 'route', pgtrack_route_json(r));
    END IF;
    IF NOT ((r.status = 'planned' AND p_status = 'in_progress') OR (r.status = 'in_progress' AND p_status = 'completed')) THEN
        RETURN jsonb_build_object('outcome', 'conflict', 'status', r.status,
                                  'allowed', CASE r.status WHEN 'planned' THEN 'in_progress' WHEN 'in_progress' THEN 'completed' END,
                                  'route', pgtrack_route_json(r));
    END IF;
    IF p_status = 'in_progress' THEN
        SELECT id INTO other FROM routes WHERE driver_id = r.driver_id AND status = 'in_progress' AND id <> p_route;
        IF FOUND THEN
            RETURN jsonb_build_object('outcome', 'driver_busy', 'status', r.status, 'other', other);
        END IF;
    END IF;
    UPDATE routes SET status = p_status,
           started_at   = CASE WHEN p_status = 'in_progress' THEN now() ELSE started_at END,
           completed_at = CASE WHEN p_status = 'completed' THEN now() ELSE completed_at END
     WHERE id = p_route
    RETURNING * INTO r;
    RETURN jsonb_build_object('outcome', 'changed', 'status', r.status, 'route', pgtrack_route_json(r));
END
$$;

-- Called by the positions trigger for one tenant's new rows, after it reserved their seqs and
-- before it logs them. For the fixes (filter_reason NULL) of drivers with a route in progress:
--
-- 1. Geofences, per route in fix order: a completed visit departs at the first later fix
--    farther than its radius + the tenant's departure margin; the next pending visit (lowest
--    sequence) arrives at the first fix within its customer's radius, then the one after it at a
--    later fix, and so on. Statuses only move forward, so jitter at an edge cannot flap: inside
--    arrives once, and departure needs the margin beyond the radius after the visit is completed.
--    Each transition logs a visit_update (seqs after the batch's location updates).
-- 2. Enrichment, set-based for the whole batch: for each fix, the next pending visit as of that
--    fix, the geodesic distance to its customer and ETA = distance / max(average reported speed
--    over the window ending at the fix, floor speed). Stored on the positions rows (one UPDATE)
--    and returned for the location_update payloads.
--
-- Work per batch: one probe when no driver is involved; otherwise a few statements per route and
-- per transition, and one window query and one UPDATE for all the fixes.
CREATE OR REPLACE FUNCTION pgtrack_fleet_process(p_tenant text, p_rows positions[])
RETURNS SETOF pgtrack_fleet_enrichment
LANGUAGE plpgsql
SET plan_cache_mode = auto  -- not the triggers' generic plans: see pgtrack_trip_advance (SQL/060)
AS $$
DECLARE
    cfg        record;
    rt         record;
    v          record;
    hit        record;
    after_time timestamptz;
    after_id   bigint;
    result     pgtrack_fleet_enrichment[];
BEGIN
    PERFORM 1 FROM unnest(p_rows) f
      JOIN drivers d ON d.device_id = f.device_id AND d.tenant_id = p_tenant
      JOIN routes r ON r.driver_id = d.id AND r.status = 'in_progress'
     WHERE f.filter_reason IS NULL
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    SELECT fleet_default_radius_metres AS radius, fleet_departure_margin_metres AS margin,
           fleet_speed_window_seconds AS window_seconds, fleet_eta_floor_speed AS floor_speed
      INTO cfg FROM tenants WHERE id = p_tenant;

    FOR rt IN
        SELECT DISTINCT r.id, d.device_id
          FROM unnest(p_rows) f
          JOIN drivers d ON d.device_id = f.device_id AND d.tenant_id = p_tenant
          JOIN routes r ON r.driver_id = d.id AND r.status = 'in_progress'
         WHERE f.filter_reason IS NULL
         ORDER BY r.id
    LOOP
        -- Concurrent batches of one route take turns.
        PERFORM 1 FROM routes WHERE id = rt.id FOR UPDATE;

        FOR v IN
            SELECT vis.id, vis.arrived_at, c.location, coalesce(c.geofence_radius_metres, cfg.radius) AS radius
              FROM visits vis
              JOIN sync.customers c ON c.tenant_id = vis.tenant_id AND c.id = vis.customer_id
                                   AND NOT c.deleted AND c.location IS NOT NULL
             WHERE vis.route_id = rt.id AND vis.status = 'completed'
             ORDER BY vis.sequence
        LOOP
            SELECT f.id, f.fix_time INTO hit
              FROM unnest(p_rows) f
             WHERE f.device_id = rt.device_id AND f.filter_reason IS NULL
               AND (v.arrived_at IS NULL OR f.fix_time > v.arrived_at)
               AND NOT ST_DWithin(f.location, v.location, v.radius + cfg.margin)
             ORDER BY f.fix_time, f.id
             LIMIT 1;
            CONTINUE WHEN NOT FOUND;
            UPDATE visits SET status = 'departed', departed_at = hit.fix_time WHERE id = v.id;
            PERFORM pgtrack_fleet_log_visit(p_tenant, v.id, 'completed', 'geofence', false);
        END LOOP;

        -- A visit is arrived at after the visits before it: a late fix (older than the route's
        -- last arrival, e.g. uploaded late from a phone's buffer) arrives nowhere.
        SELECT vis.arrived_at, vis.arrived_position_id INTO after_time, after_id
          FROM visits vis
         WHERE vis.route_id = rt.id AND vis.arrived_at IS NOT NULL
         ORDER BY vis.arrived_at DESC, vis.arrived_position_id DESC NULLS LAST
         LIMIT 1;
        after_time := coalesce(after_time, '-infinity');
        after_id := coalesce(after_id, 0);
        LOOP
            SELECT vis.id, c.location, coalesce(c.geofence_radius_metres, cfg.radius) AS radius INTO v
              FROM visits vis
              LEFT JOIN sync.customers c ON c.tenant_id = vis.tenant_id AND c.id = vis.customer_id AND NOT c.deleted
             WHERE vis.route_id = rt.id AND vis.status = 'pending'
             ORDER BY vis.sequence
             LIMIT 1;
            -- No pending visit, or the next one's customer has no location: nothing can arrive.
            EXIT WHEN NOT FOUND OR v.location IS NULL;
            SELECT f.id, f.fix_time INTO hit
              FROM unnest(p_rows) f
             WHERE f.device_id = rt.device_id AND f.filter_reason IS NULL
               AND (f.fix_time, f.id) > (after_time, after_id)
               AND ST_DWithin(f.location, v.location, v.radius)
             ORDER BY f.fix_time, f.id
             LIMIT 1;
            EXIT WHEN NOT FOUND;
            UPDATE visits SET status = 'arrived', arrived_at = hit.fix_time, arrived_position_id = hit.id WHERE id = v.id;
            PERFORM pgtrack_fleet_log_visit(p_tenant, v.id, 'pending', 'geofence', false);
            after_time := hit.fix_time;
            after_id := hit.id;
        END LOOP;
    END LOOP;

    WITH batch AS (
        SELECT f.id, f.device_id, f.fix_time, f.location, r.id AS route_id
          FROM unnest(p_rows) f
          JOIN drivers d ON d.device_id = f.device_id AND d.tenant_id = p_tenant
          JOIN routes r ON r.driver_id = d.id AND r.status = 'in_progress'
         WHERE f.filter_reason IS NULL
    ), speeds AS (
        SELECT w.id, w.avg_speed
          FROM (SELECT p.id,
                       avg(p.speed) OVER (PARTITION BY p.device_id ORDER BY p.fix_time
                                          RANGE BETWEEN make_interval(secs => cfg.window_seconds) PRECEDING AND CURRENT ROW) AS avg_speed
                  FROM positions p
                 WHERE p.tenant_id = p_tenant
                   AND p.device_id IN (SELECT device_id FROM batch)
                   AND p.fix_time > (SELECT min(fix_time) FROM batch) - make_interval(secs => cfg.window_seconds)
                   AND p.fix_time <= (SELECT max(fix_time) FROM batch)
                   AND p.filter_reason IS NULL) w
         WHERE w.id IN (SELECT id FROM batch)
    ), nxt AS (
        SELECT b.id, b.route_id, nv.id AS visit_id, ST_Distance(b.location, c.location) AS distance
          FROM batch b
          LEFT JOIN LATERAL (
              -- Pending now, or arrived in this batch at a later fix than this one.
              SELECT vis.id, vis.customer_id
                FROM visits vis
               WHERE vis.route_id = b.route_id
                 AND (vis.status = 'pending'
                      OR (vis.arrived_position_id IN (SELECT id FROM batch)
                          AND (vis.arrived_at, vis.arrived_position_id) > (b.fix_time, b.id)))
               ORDER BY vis.sequence
               LIMIT 1) nv ON true
          LEFT JOIN sync.customers c ON c.tenant_id = p_tenant AND c.id = nv.customer_id AND NOT c.deleted
    )
    SELECT array_agg(ROW(n.id, n.route_id, n.visit_id, n.distance,
                         n.distance / greatest(coalesce(s.avg_speed, 0), cfg.floor_speed))::pgtrack_fleet_enrichment)
      INTO result
      FROM nxt n LEFT JOIN speeds s ON s.id = n.id;

    UPDATE positions p
       SET route_id = e.route_id, next_visit_id = e.next_visit_id,
           distance_to_next_m = e.distance_m, eta_seconds = e.eta_seconds
      FROM unnest(result) e, unnest(p_rows) f
     WHERE f.id = e.position_id AND p.id = f.id AND p.device_id = f.device_id AND p.fix_time = f.fix_time;

    RETURN QUERY SELECT * FROM unnest(result);
END
$$;

-- Drivers with a fix in the last p_minutes, each with their latest position as the location
-- update that carried it when the change log still has it (enrichment included), otherwise as
-- stored. Newest first.
CREATE OR REPLACE FUNCTION pgtrack_active_drivers(p_tenant text, p_minutes integer)
RETURNS TABLE (device_id uuid, group_name text, grade integer, driver jsonb)
LANGUAGE sql STABLE AS $$
    SELECT d.device_id, dv.group_name, dv.grade,
           pgtrack_driver_json(d)
           || jsonb_build_object('route_id', (SELECT r.id FROM routes r WHERE r.driver_id = d.id AND r.status = 'in_progress'))
           || jsonb_build_object('position', coalesce(
                  (SELECT cl.payload FROM change_log cl WHERE cl.tenant_id = lp.tenant_id AND cl.seq = lp.seq),
                  jsonb_build_object('seq', lp.seq) || pgtrack_position_json(lp.device_id, lp.booking_id, lp.fix_time,
                      lp.received_at, lp.location, lp.speed, lp.heading, lp.altitude, lp.accuracy, lp.battery, lp.attributes)))
      FROM drivers d
      JOIN latest_positions lp ON lp.device_id = d.device_id
      JOIN devices dv ON dv.id = d.device_id
     WHERE d.tenant_id = p_tenant AND lp.fix_time > now() - make_interval(mins => p_minutes)
     ORDER BY lp.fix_time DESC, d.id
$$;
