-- Every insert into positions, whether from the REST API or from any program speaking SQL,
-- logs one location_update per row, upserts latest_positions and rings the doorbell, all in
-- the inserting transaction. Statement-level with a transition table: a 1,000-row INSERT is
-- a handful of set-based statements and one NOTIFY per channel, not 1,000 of each.

CREATE OR REPLACE FUNCTION pgtrack_positions_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    grp      record;
    base     bigint;
    settings tenants;
    n_logged bigint;
    -- Rows the tenant's filters rejected (SQL/035): logged as `filtered`, never the marker;
    -- in 'drop' mode deleted again and not logged at all.
    f_ids     bigint[];
    f_devices uuid[];
    f_times   timestamptz[];
    f_reasons text[];
    dropping  boolean;
    fleet     pgtrack_fleet_enrichment[];
    head      bigint;
BEGIN
    -- Tenants in a fixed order so concurrent multi-tenant batches cannot deadlock on heads.
    FOR grp IN SELECT tenant_id, count(*) AS n FROM new_rows GROUP BY tenant_id ORDER BY tenant_id LOOP
        SELECT * INTO settings FROM tenants WHERE id = grp.tenant_id;
        f_ids := '{}'; f_reasons := '{}';
        dropping := settings.filter_mode = 'drop';
        IF pgtrack_filters_enabled(settings) OR EXISTS (SELECT 1 FROM new_rows r WHERE r.tenant_id = grp.tenant_id AND r.filter_reason IS NOT NULL) THEN
            -- Take the head lock before judging, so the marker and history the filters compare
            -- with include every earlier writer of the tenant (the same serialisation as below).
            PERFORM 1 FROM change_log_heads WHERE tenant_id = grp.tenant_id FOR UPDATE;
            SELECT coalesce(array_agg(f.id), '{}'), array_agg(f.device_id), array_agg(f.fix_time), coalesce(array_agg(f.reason), '{}')
              INTO f_ids, f_devices, f_times, f_reasons
              FROM pgtrack_position_filter(settings, ARRAY(SELECT ROW(r.*)::positions FROM new_rows r WHERE r.tenant_id = grp.tenant_id)) f;
            IF cardinality(f_ids) > 0 THEN
                IF dropping THEN
                    DELETE FROM positions p USING unnest(f_ids, f_devices, f_times) AS u(id, device_id, fix_time)
                     WHERE p.device_id = u.device_id AND p.fix_time = u.fix_time AND p.id = u.id;
                ELSE
                    UPDATE positions p SET filter_reason = u.reason
                      FROM unnest(f_ids, f_devices, f_times, f_reasons) AS u(id, device_id, fix_time, reason)
                     WHERE p.device_id = u.device_id AND p.fix_time = u.fix_time AND p.id = u.id
                       AND p.filter_reason IS DISTINCT FROM u.reason;
                END IF;
            END IF;
        END IF;
        n_logged := grp.n - CASE WHEN dropping THEN cardinality(f_ids) ELSE 0 END;
        CONTINUE WHEN n_logged = 0;

        -- Reserve n seqs; the row lock is held until commit, so this tenant's seqs commit in order.
        UPDATE change_log_heads SET last_seq = last_seq + n_logged
         WHERE tenant_id = grp.tenant_id
        RETURNING last_seq - n_logged INTO base;

        -- Fleet (SQL/100_fleet.sql): geofence transitions, logged as visit_update after these
        -- seqs, and each accepted driver fix's next visit, distance and ETA for its payload.
        -- Filtered fixes take no part (neither here nor on the marker).
        fleet := ARRAY(SELECT e FROM pgtrack_fleet_process(grp.tenant_id,
                           ARRAY(SELECT ROW(r.*)::positions FROM new_rows r
                                  WHERE r.tenant_id = grp.tenant_id AND r.id <> ALL (f_ids))) e);

        -- `latest` tells a live client whether the fix moves the marker: false for a fix older
        -- than the stored one (it is history only), so live views agree with the next snapshot.
        -- Exact, because the head lock above serialises this tenant's writers and this statement
        -- sees every earlier commit.
        WITH judged AS (
            SELECT r.*, f.reason
              FROM new_rows r
              LEFT JOIN unnest(f_ids, f_reasons) AS f(id, reason) ON f.id = r.id
             WHERE r.tenant_id = grp.tenant_id AND NOT (dropping AND f.id IS NOT NULL)
        ), numbered AS (
            SELECT r.*, base + row_number() OVER (ORDER BY r.id) AS seq,
                   r.reason IS NULL AND row_number() OVER (PARTITION BY r.device_id, r.reason IS NULL
                                                           ORDER BY r.fix_time DESC, r.id DESC) = 1 AS newest_in_batch
              FROM judged r
        ), logged AS (
            INSERT INTO change_log (tenant_id, seq, kind, device_id, booking_id, payload, device_group, device_grade, route_id)
            SELECT n.tenant_id, n.seq, 'location_update', n.device_id, n.booking_id,
                   jsonb_build_object('seq', n.seq, 'type', 'location_update',
                                      'latest', n.newest_in_batch AND (cur.fix_time IS NULL OR n.fix_time > cur.fix_time))
                   || CASE WHEN n.reason IS NOT NULL THEN jsonb_build_object('filtered', n.reason) ELSE '{}'::jsonb END
                   || pgtrack_position_json(n.device_id, n.booking_id, n.fix_time, n.received_at, n.location,
                                            n.speed, n.heading, n.altitude, n.accuracy, n.battery, n.attributes)
                   || jsonb_strip_nulls(jsonb_build_object('route_id', e.route_id, 'next_visit_id', e.next_visit_id,
                          'distance_to_next_m', round(e.distance_m::numeric, 1)::float8,
                          'eta_seconds', round(e.eta_seconds::numeric)::float8)),
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

        -- Through the head as it is now: visit events the fleet step logged come after the fixes.
        SELECT last_seq INTO head FROM change_log_heads WHERE tenant_id = grp.tenant_id;
        PERFORM pgtrack_notify_logged(grp.tenant_id, base, head);
    END LOOP;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS positions_after_insert ON positions;
CREATE TRIGGER positions_after_insert AFTER INSERT ON positions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_positions_after_insert();
