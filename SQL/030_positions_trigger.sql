-- Every insert into positions, whether from the REST API or from any program speaking SQL,
-- logs one location_update per row, upserts latest_positions and rings the doorbell, all in
-- the inserting transaction. Statement-level with a transition table, and set-based across
-- tenants: a 1,000-row INSERT, or one row for each of 50 tenants (the REST group commit), is a
-- handful of statements and one NOTIFY per channel, not one of each per row or per tenant.
-- (Per tenant it was: a 5-row insert over 5 tenants cost twice the CPU of 5 rows of one tenant.)

CREATE OR REPLACE FUNCTION pgtrack_positions_after_insert() RETURNS trigger
LANGUAGE plpgsql
-- One generic plan per statement below, kept for the session. plpgsql otherwise re-plans the
-- statements whose array parameters (tenant_ids, b_tenants…) make a custom plan look cheaper:
-- under the reference load the head lock and the doorbell call were planned on every call
-- (pg_stat_statements, track = all), and a one-row insert cost PostgreSQL 0.565–0.575 ms
-- against 0.500–0.508 ms with generic plans (bench/trigger_cost.sh, its back-to-back line).
-- Functions called from here that read positions opt out (SET plan_cache_mode = auto).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    tenant_ids text[];
    settings   tenants;
    grp        record;
    -- Rows the tenants' filters rejected (SQL/035): logged as `filtered`, never the marker;
    -- dropped (the tenant's 'drop' mode) rows are deleted again and not logged at all.
    f_ids      bigint[] := '{}';
    f_devices  uuid[] := '{}';
    f_times    timestamptz[] := '{}';
    f_reasons  text[] := '{}';
    f_drop     boolean[] := '{}';
    dropped    bigint[] := '{}';
    -- Each tenant's seqs before this statement's: its rows take base + 1, base + 2, ...
    b_tenants  text[];
    b_bases    bigint[];
    fleet      pgtrack_fleet_enrichment[] := '{}';
BEGIN
    -- Take every tenant's head lock first, in a fixed order, so concurrent multi-tenant batches
    -- cannot deadlock. Held until commit: each tenant's seqs commit in order, and the filters
    -- and the marker below see every earlier writer of the tenant.
    -- (One tenant without filters: the UPDATE below takes its lock soon enough.)
    tenant_ids := ARRAY(SELECT DISTINCT tenant_id FROM new_rows ORDER BY 1);
    IF cardinality(tenant_ids) > 1 THEN
        PERFORM 1 FROM change_log_heads WHERE tenant_id = ANY (tenant_ids) ORDER BY tenant_id FOR UPDATE;
    END IF;

    FOR settings IN
        SELECT t.* FROM tenants t
         WHERE t.id = ANY (tenant_ids)
           AND (pgtrack_filters_enabled(t) OR EXISTS (SELECT 1 FROM new_rows r WHERE r.tenant_id = t.id AND r.filter_reason IS NOT NULL))
         ORDER BY t.id
    LOOP
        PERFORM 1 FROM change_log_heads WHERE tenant_id = settings.id FOR UPDATE;  -- judge after earlier writers
        SELECT f_ids || coalesce(array_agg(f.id), '{}'), f_devices || coalesce(array_agg(f.device_id), '{}'),
               f_times || coalesce(array_agg(f.fix_time), '{}'), f_reasons || coalesce(array_agg(f.reason), '{}'),
               f_drop || coalesce(array_agg(settings.filter_mode = 'drop'), '{}')
          INTO f_ids, f_devices, f_times, f_reasons, f_drop
          FROM pgtrack_position_filter(settings, ARRAY(SELECT ROW(r.*)::positions FROM new_rows r WHERE r.tenant_id = settings.id)) f;
    END LOOP;
    IF cardinality(f_ids) > 0 THEN
        dropped := ARRAY(SELECT u.id FROM unnest(f_ids, f_drop) AS u(id, drop) WHERE u.drop);
        DELETE FROM positions p USING unnest(f_ids, f_devices, f_times, f_drop) AS u(id, device_id, fix_time, drop)
         WHERE u.drop AND p.device_id = u.device_id AND p.fix_time = u.fix_time AND p.id = u.id;
        UPDATE positions p SET filter_reason = u.reason
          FROM unnest(f_ids, f_devices, f_times, f_reasons, f_drop) AS u(id, device_id, fix_time, reason, drop)
         WHERE NOT u.drop AND p.device_id = u.device_id AND p.fix_time = u.fix_time AND p.id = u.id
           AND p.filter_reason IS DISTINCT FROM u.reason;
    END IF;

    -- Reserve each tenant's seqs for its logged rows (a tenant whose rows were all dropped logs nothing).
    WITH counts AS (
        SELECT r.tenant_id, count(*) AS n FROM new_rows r WHERE r.id <> ALL (dropped) GROUP BY r.tenant_id
    ), bumped AS (
        UPDATE change_log_heads h SET last_seq = h.last_seq + c.n
          FROM counts c
         WHERE h.tenant_id = c.tenant_id
        RETURNING h.tenant_id, h.last_seq - c.n AS base
    )
    SELECT array_agg(tenant_id ORDER BY tenant_id), array_agg(base ORDER BY tenant_id) INTO b_tenants, b_bases FROM bumped;
    IF b_tenants IS NULL THEN
        RETURN NULL;
    END IF;

    -- Fleet (SQL/100_fleet.sql), for tenants with a driver of these devices on a route:
    -- geofence transitions, logged as visit_update after these seqs, and each accepted driver
    -- fix's next visit, distance and ETA for its payload. Filtered fixes take no part.
    FOR grp IN
        SELECT DISTINCT r.tenant_id
          FROM new_rows r
          JOIN drivers d ON d.device_id = r.device_id AND d.tenant_id = r.tenant_id
          JOIN routes ro ON ro.driver_id = d.id AND ro.status = 'in_progress'
         WHERE r.id <> ALL (f_ids)
         ORDER BY r.tenant_id
    LOOP
        fleet := fleet || ARRAY(SELECT e FROM pgtrack_fleet_process(grp.tenant_id,
                                    ARRAY(SELECT ROW(r.*)::positions FROM new_rows r
                                           WHERE r.tenant_id = grp.tenant_id AND r.id <> ALL (f_ids))) e);
    END LOOP;

    -- `latest` tells a live client whether the fix moves the marker: false for a fix older
    -- than the stored one (it is history only), so live views agree with the next snapshot.
    -- Exact, because the head locks above serialise each tenant's writers and this statement
    -- sees every earlier commit.
    WITH judged AS (
        SELECT r.*, f.reason
          FROM new_rows r
          LEFT JOIN unnest(f_ids, f_reasons) AS f(id, reason) ON f.id = r.id
         WHERE r.id <> ALL (dropped)
    ), numbered AS (
        SELECT r.*, b.base + row_number() OVER (PARTITION BY r.tenant_id ORDER BY r.id) AS seq,
               r.reason IS NULL AND row_number() OVER (PARTITION BY r.device_id, r.reason IS NULL
                                                       ORDER BY r.fix_time DESC, r.id DESC) = 1 AS newest_in_batch
          FROM judged r
          JOIN unnest(b_tenants, b_bases) AS b(tenant_id, base) ON b.tenant_id = r.tenant_id
    ), logged AS (
        INSERT INTO change_log (tenant_id, seq, kind, device_id, booking_id, payload, device_group, device_grade, route_id)
        SELECT n.tenant_id, n.seq, 'location_update', n.device_id, n.booking_id,
               -- One text, parsed once (see pgtrack_position_fields for why).
               concat('{"seq":', n.seq, ',"type":"location_update","latest":',
                      CASE WHEN n.newest_in_batch AND (cur.fix_time IS NULL OR n.fix_time > cur.fix_time)
                           THEN 'true' ELSE 'false' END,
                      ',"filtered":' || to_json(n.reason), ',',
                      pgtrack_position_fields(n.device_id, n.booking_id, n.fix_time, n.received_at, n.location,
                                              n.speed, n.heading, n.altitude, n.accuracy, n.battery, n.attributes),
                      ',"route_id":"' || e.route_id || '"',
                      ',"next_visit_id":"' || e.next_visit_id || '"',
                      ',"distance_to_next_m":' || to_json(round(e.distance_m::numeric, 1)::float8),
                      ',"eta_seconds":' || to_json(round(e.eta_seconds::numeric)::float8),
                      '}')::jsonb,
               d.group_name, d.grade, e.route_id
          FROM numbered n
          JOIN devices d ON d.id = n.device_id
          LEFT JOIN latest_positions cur ON cur.device_id = n.device_id
          LEFT JOIN unnest(fleet) e ON e.position_id = n.id
    )
    INSERT INTO latest_positions AS lp (device_id, tenant_id, booking_id, fix_time, received_at,
                                        location, speed, heading, altitude, accuracy, battery,
                                        attributes, seq)
    SELECT DISTINCT ON (device_id)
           device_id, tenant_id, booking_id, fix_time, received_at, location, speed, heading,
           altitude, accuracy, battery, attributes, seq
      FROM numbered
     WHERE reason IS NULL
     ORDER BY device_id, fix_time DESC, seq DESC
    ON CONFLICT (device_id) DO UPDATE SET
           booking_id = EXCLUDED.booking_id, fix_time = EXCLUDED.fix_time,
           received_at = EXCLUDED.received_at, location = EXCLUDED.location,
           speed = EXCLUDED.speed, heading = EXCLUDED.heading, altitude = EXCLUDED.altitude,
           accuracy = EXCLUDED.accuracy, battery = EXCLUDED.battery,
           attributes = EXCLUDED.attributes, seq = EXCLUDED.seq
     -- An older (or equally old) fix never replaces the one shown on the map.
     WHERE lp.fix_time < EXCLUDED.fix_time;

    -- Through each head as it is now: visit events the fleet step logged come after the fixes.
    PERFORM pgtrack_notify_logged_many(b_tenants, b_bases,
                                       ARRAY(SELECT h.last_seq FROM unnest(b_tenants) WITH ORDINALITY AS b(tenant_id, i)
                                               JOIN change_log_heads h ON h.tenant_id = b.tenant_id ORDER BY b.i));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS positions_after_insert ON positions;
CREATE TRIGGER positions_after_insert AFTER INSERT ON positions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_positions_after_insert();
