-- The time-series lifecycle: rollups kept incrementally from the change log (a continuous
-- aggregate), raw partitions compacted and dropped whole, old rollups expired. Run by the
-- maintenance service of `pgtrack serve` and by `pgtrack maintain`; every function takes the
-- clock as p_now so a test can move time.

-- Compacts one UTC day of raw positions into position_tracks: one row per device and hour,
-- vertices in (fix_time, id) order. Returns the rows written.
CREATE OR REPLACE FUNCTION pgtrack_compact_positions(p_partition regclass)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    EXECUTE format($q$
        INSERT INTO position_tracks AS t (tenant_id, device_id, bucket, point_count, track, fix_times, speeds, headings)
        SELECT tenant_id, device_id, date_trunc('hour', fix_time, 'UTC'), count(*),
               CASE WHEN count(*) = 1 THEN (array_agg(location::geometry))[1]
                    ELSE ST_MakeLine(location::geometry ORDER BY fix_time, id) END,
               array_agg(fix_time ORDER BY fix_time, id), array_agg(speed ORDER BY fix_time, id),
               array_agg(heading ORDER BY fix_time, id)
          FROM %s
         GROUP BY tenant_id, device_id, date_trunc('hour', fix_time, 'UTC')
        ON CONFLICT (tenant_id, device_id, bucket) DO NOTHING
        $q$, p_partition);
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

-- The points of a compacted hour, as they were stored: the way back from position_tracks.
CREATE OR REPLACE FUNCTION pgtrack_track_points(p_tenant text, p_device uuid, p_bucket timestamptz)
RETURNS TABLE (fix_time timestamptz, latitude double precision, longitude double precision,
               speed double precision, heading double precision)
LANGUAGE sql STABLE AS $$
    SELECT t.fix_times[n], ST_Y(g.geom), ST_X(g.geom), t.speeds[n], t.headings[n]
      FROM position_tracks t
     CROSS JOIN LATERAL generate_series(1, t.point_count) n
     CROSS JOIN LATERAL (SELECT CASE WHEN t.point_count = 1 THEN t.track ELSE ST_PointN(t.track, n) END AS geom) g
     WHERE t.tenant_id = p_tenant AND t.device_id = p_device AND t.bucket = p_bucket
     ORDER BY n
$$;

-- Retires one expired partition (see pgtrack_expired_partitions) in the caller's transaction:
-- a positions day is compacted first (when compact_before_drop), a change-log day first moves
-- each tenant's pruned_through past its seqs so resumes from before it get a reset. Refuses to
-- drop change-log seqs the rollups have not consumed yet. Waits at most lock_wait for the locks
-- (a DROP queues ahead of every writer of the parent; better to try again on the next pass).
CREATE OR REPLACE FUNCTION pgtrack_retire_partition(p_partition text, lock_wait interval DEFAULT '2 seconds',
                                                    OUT parent text, OUT rows_dropped bigint, OUT raw_bytes bigint,
                                                    OUT tracks_written bigint, OUT track_bytes bigint)
LANGUAGE plpgsql AS $$
DECLARE
    part     regclass := to_regclass(p_partition);
    behind   text;
BEGIN
    IF part IS NULL OR p_partition !~ '^(positions|change_log)_p[0-9]{8}$' THEN
        RAISE EXCEPTION 'no such partition: %', p_partition USING ERRCODE = 'undefined_table';
    END IF;
    parent := substring(p_partition FROM '^(positions|change_log)_p');
    PERFORM set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint::text, true);
    -- No writes into the day while it is compacted; readers go on.
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', part);
    EXECUTE format('SELECT count(*), pg_total_relation_size(%L) FROM %s', part, part) INTO rows_dropped, raw_bytes;
    tracks_written := 0;
    track_bytes := 0;
    IF parent = 'positions' THEN
        IF (SELECT compact_before_drop FROM maintenance_settings) THEN
            tracks_written := pgtrack_compact_positions(part);
            EXECUTE format($q$
                SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM position_tracks t
                 WHERE (t.tenant_id, t.device_id, t.bucket) IN (
                       SELECT DISTINCT tenant_id, device_id, date_trunc('hour', fix_time, 'UTC') FROM %s)
                $q$, part) INTO track_bytes;
        END IF;
    ELSE
        EXECUTE format($q$
            SELECT string_agg(c.tenant_id, ', ')
              FROM (SELECT tenant_id, max(seq) AS hi FROM %s GROUP BY tenant_id) c
              LEFT JOIN rollup_watermarks w ON w.tenant_id = c.tenant_id
             WHERE c.hi > coalesce(w.last_seq, 0)
            $q$, part) INTO behind;
        IF behind IS NOT NULL THEN
            RAISE EXCEPTION 'rollups have not consumed % yet (tenants %); refresh them first', p_partition, behind
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        EXECUTE format($q$
            UPDATE change_log_heads h SET pruned_through = greatest(h.pruned_through, c.hi)
              FROM (SELECT tenant_id, max(seq) AS hi FROM %s GROUP BY tenant_id) c
             WHERE h.tenant_id = c.tenant_id
            $q$, part);
    END IF;
    EXECUTE format('DROP TABLE %s', part);
END
$$;

-- Brings the rollups of every tenant up to its change-log head, at most p_max_seqs seqs per
-- tenant per call. Each logged position re-opens the hour it falls in (and the hour of the fix
-- after it, whose segment it changed); an hour that only gained fixes after its last one is
-- extended, any other is recomputed from the raw points; then the touched days are re-summed
-- from their hours. A purge re-opens every hour of the device. One node at a time: returns no
-- rows when another holds the lock.
CREATE OR REPLACE FUNCTION pgtrack_refresh_rollups(p_max_seqs bigint DEFAULT 200000)
RETURNS TABLE (tenant_id text, from_seq bigint, to_seq bigint, hours_refreshed bigint, days_refreshed bigint,
               caught_up boolean)
-- The planner cannot know how few rows the dirty list holds and would JIT-compile for seconds.
LANGUAGE plpgsql SET jit = off AS $$
#variable_conflict use_column
DECLARE
    t         record;
    settings  maintenance_settings;
    upto      bigint;
    n_hours   bigint;
    n_days    bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('pgtrack.rollups')) THEN
        RETURN;
    END IF;
    SELECT * INTO settings FROM maintenance_settings;
    IF to_regclass('pg_temp.pgtrack_dirty_hours') IS NULL THEN
        CREATE TEMP TABLE pgtrack_dirty_hours (
            tenant_id text, device_id uuid, bucket timestamptz, min_ts timestamptz
        ) ON COMMIT DELETE ROWS;
    END IF;

    FOR t IN
        SELECT h.tenant_id, h.last_seq AS head, h.pruned_through, coalesce(w.last_seq, 0) AS mark
          FROM change_log_heads h
          LEFT JOIN rollup_watermarks w ON w.tenant_id = h.tenant_id
         WHERE h.last_seq > coalesce(w.last_seq, 0)
         ORDER BY h.tenant_id
    LOOP
        TRUNCATE pgtrack_dirty_hours;
        upto := least(t.head, t.mark + p_max_seqs);
        IF t.pruned_through > t.mark THEN
            -- The log no longer holds everything since the watermark: every hour with raw points
            -- is recomputed (rare: maintenance did not run for longer than the log is kept).
            upto := t.head;
            INSERT INTO pgtrack_dirty_hours
            SELECT DISTINCT p.tenant_id, p.device_id, date_trunc('hour', p.fix_time, 'UTC'), '-infinity'::timestamptz
              FROM positions p WHERE p.tenant_id = t.tenant_id;
        ELSE
            INSERT INTO pgtrack_dirty_hours
            WITH changed AS (
                SELECT c.device_id, date_trunc('hour', (c.payload ->> 'timestamp')::timestamptz, 'UTC') AS bucket,
                       min((c.payload ->> 'timestamp')::timestamptz) AS min_ts,
                       max((c.payload ->> 'timestamp')::timestamptz) AS max_ts
                  FROM change_log c
                 WHERE c.tenant_id = t.tenant_id AND c.seq > t.mark AND c.seq <= upto AND c.kind = 'location_update'
                 GROUP BY 1, 2
            ), spill AS (
                SELECT c.device_id, date_trunc('hour', nxt.fix_time, 'UTC') AS bucket, nxt.fix_time AS min_ts
                  FROM changed c
                 CROSS JOIN LATERAL (SELECT p.fix_time FROM positions p
                                      WHERE p.device_id = c.device_id AND p.fix_time > c.max_ts
                                      ORDER BY p.fix_time LIMIT 1) nxt
                 WHERE date_trunc('hour', nxt.fix_time, 'UTC') <> c.bucket
            ), purged AS (
                SELECT r.device_id, r.bucket, '-infinity'::timestamptz AS min_ts
                  FROM rollup_device_hourly r
                 WHERE r.tenant_id = t.tenant_id
                   AND r.device_id IN (SELECT c.device_id FROM change_log c
                                        WHERE c.tenant_id = t.tenant_id AND c.seq > t.mark AND c.seq <= upto
                                          AND c.kind = 'purged')
            )
            SELECT t.tenant_id, device_id, bucket, min(min_ts)
              FROM (SELECT device_id, bucket, min_ts FROM changed
                    UNION ALL SELECT * FROM spill UNION ALL SELECT * FROM purged) d
             GROUP BY device_id, bucket;
        END IF;

        -- Hours: extend (only fixes after the stored last one) or recompute, then write.
        WITH mode AS (
            SELECT d.device_id, d.bucket, h.last_fix AS old_last,
                   (h.last_fix IS NOT NULL AND d.min_ts > h.last_fix) AS extend
              FROM pgtrack_dirty_hours d
              LEFT JOIN rollup_device_hourly h
                ON h.tenant_id = d.tenant_id AND h.device_id = d.device_id AND h.bucket = d.bucket
        ), pts AS (
            SELECT m.device_id, m.bucket, m.extend, m.old_last, s.fix_time, s.id, s.location, s.speed
              FROM mode m
             CROSS JOIN LATERAL (
                   (SELECT p.fix_time, p.id, p.location, p.speed FROM positions p
                     WHERE p.device_id = m.device_id AND p.filter_reason IS NULL AND p.fix_time < CASE WHEN m.extend THEN m.old_last ELSE m.bucket END
                     ORDER BY p.fix_time DESC, p.id DESC LIMIT 1)
                   UNION ALL
                   SELECT p.fix_time, p.id, p.location, p.speed FROM positions p
                    WHERE p.device_id = m.device_id AND p.filter_reason IS NULL  -- filtered fixes (SQL/035) are no travel
                      AND p.fix_time >= CASE WHEN m.extend THEN m.old_last ELSE m.bucket END
                      AND p.fix_time < m.bucket + interval '1 hour') s
        ), segments AS (
            SELECT pts.*, ST_Distance(lag(location) OVER w, location) AS d,
                   extract(epoch FROM fix_time - lag(fix_time) OVER w)::float8 AS dt
              FROM pts WINDOW w AS (PARTITION BY device_id, bucket ORDER BY fix_time, id)
        ), fresh AS (
            SELECT device_id, bucket, bool_or(extend) AS extend, count(*)::integer AS points,
                   coalesce(sum(d), 0) AS distance,
                   coalesce(sum(dt) FILTER (WHERE dt <= settings.rollup_gap_seconds
                                              AND coalesce(speed, d / nullif(dt, 0)) >= settings.rollup_moving_speed), 0) AS moving,
                   coalesce(sum(dt) FILTER (WHERE dt <= settings.rollup_gap_seconds), 0) AS tracked,
                   coalesce(sum(speed), 0) AS speed_sum, count(speed)::integer AS speed_count, max(speed) AS max_speed,
                   min(fix_time) AS first_fix, max(fix_time) AS last_fix,
                   min(ST_Y(location::geometry)) AS min_lat, min(ST_X(location::geometry)) AS min_lon,
                   max(ST_Y(location::geometry)) AS max_lat, max(ST_X(location::geometry)) AS max_lon
              FROM segments
             WHERE CASE WHEN extend THEN fix_time > old_last ELSE fix_time >= bucket END
             GROUP BY device_id, bucket
        ), emptied AS (
            DELETE FROM rollup_device_hourly h
             USING mode m
             WHERE h.tenant_id = t.tenant_id AND h.device_id = m.device_id AND h.bucket = m.bucket AND NOT m.extend
               AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.device_id = m.device_id AND f.bucket = m.bucket)
        )
        INSERT INTO rollup_device_hourly AS h (tenant_id, device_id, bucket, points, distance_metres, moving_seconds,
                                               tracked_seconds, speed_sum, speed_count, max_speed, first_fix, last_fix,
                                               min_lat, min_lon, max_lat, max_lon, refreshed_at)
        SELECT t.tenant_id, f.device_id, f.bucket,
               f.points + CASE WHEN f.extend THEN o.points ELSE 0 END,
               f.distance + CASE WHEN f.extend THEN o.distance_metres ELSE 0 END,
               f.moving + CASE WHEN f.extend THEN o.moving_seconds ELSE 0 END,
               f.tracked + CASE WHEN f.extend THEN o.tracked_seconds ELSE 0 END,
               f.speed_sum + CASE WHEN f.extend THEN o.speed_sum ELSE 0 END,
               f.speed_count + CASE WHEN f.extend THEN o.speed_count ELSE 0 END,
               CASE WHEN f.extend THEN greatest(f.max_speed, o.max_speed) ELSE f.max_speed END,
               CASE WHEN f.extend THEN o.first_fix ELSE f.first_fix END,
               f.last_fix,
               CASE WHEN f.extend THEN least(f.min_lat, o.min_lat) ELSE f.min_lat END,
               CASE WHEN f.extend THEN least(f.min_lon, o.min_lon) ELSE f.min_lon END,
               CASE WHEN f.extend THEN greatest(f.max_lat, o.max_lat) ELSE f.max_lat END,
               CASE WHEN f.extend THEN greatest(f.max_lon, o.max_lon) ELSE f.max_lon END,
               now()
          FROM fresh f
          LEFT JOIN rollup_device_hourly o ON o.tenant_id = t.tenant_id AND o.device_id = f.device_id AND o.bucket = f.bucket
        ON CONFLICT (tenant_id, device_id, bucket) DO UPDATE SET
               points = EXCLUDED.points, distance_metres = EXCLUDED.distance_metres,
               moving_seconds = EXCLUDED.moving_seconds, tracked_seconds = EXCLUDED.tracked_seconds,
               speed_sum = EXCLUDED.speed_sum, speed_count = EXCLUDED.speed_count, max_speed = EXCLUDED.max_speed,
               first_fix = EXCLUDED.first_fix, last_fix = EXCLUDED.last_fix,
               min_lat = EXCLUDED.min_lat, min_lon = EXCLUDED.min_lon, max_lat = EXCLUDED.max_lat,
               max_lon = EXCLUDED.max_lon, refreshed_at = EXCLUDED.refreshed_at;
        SELECT count(*) INTO n_hours FROM pgtrack_dirty_hours;

        -- Days: the exact sum of their hours.
        WITH days AS (
            SELECT DISTINCT device_id, (bucket AT TIME ZONE 'UTC')::date AS day FROM pgtrack_dirty_hours
        ), summed AS (
            SELECT d.device_id, d.day, sum(h.points)::integer AS points, sum(h.distance_metres) AS distance,
                   sum(h.moving_seconds) AS moving, sum(h.tracked_seconds) AS tracked, sum(h.speed_sum) AS speed_sum,
                   sum(h.speed_count)::integer AS speed_count, max(h.max_speed) AS max_speed,
                   min(h.first_fix) AS first_fix, max(h.last_fix) AS last_fix,
                   min(h.min_lat) AS min_lat, min(h.min_lon) AS min_lon, max(h.max_lat) AS max_lat, max(h.max_lon) AS max_lon
              FROM days d
              JOIN rollup_device_hourly h
                ON h.tenant_id = t.tenant_id AND h.device_id = d.device_id
               AND h.bucket >= d.day::timestamp AT TIME ZONE 'UTC' AND h.bucket < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
             GROUP BY d.device_id, d.day
        ), emptied AS (
            DELETE FROM rollup_device_daily r
             USING days d
             WHERE r.tenant_id = t.tenant_id AND r.device_id = d.device_id AND r.day = d.day
               AND NOT EXISTS (SELECT 1 FROM summed s WHERE s.device_id = d.device_id AND s.day = d.day)
        )
        INSERT INTO rollup_device_daily AS r (tenant_id, device_id, day, points, distance_metres, moving_seconds,
                                              tracked_seconds, speed_sum, speed_count, max_speed, first_fix, last_fix,
                                              min_lat, min_lon, max_lat, max_lon, refreshed_at)
        SELECT t.tenant_id, s.device_id, s.day, s.points, s.distance, s.moving, s.tracked, s.speed_sum, s.speed_count,
               s.max_speed, s.first_fix, s.last_fix, s.min_lat, s.min_lon, s.max_lat, s.max_lon, now()
          FROM summed s
        ON CONFLICT (tenant_id, device_id, day) DO UPDATE SET
               points = EXCLUDED.points, distance_metres = EXCLUDED.distance_metres,
               moving_seconds = EXCLUDED.moving_seconds, tracked_seconds = EXCLUDED.tracked_seconds,
               speed_sum = EXCLUDED.speed_sum, speed_count = EXCLUDED.speed_count, max_speed = EXCLUDED.max_speed,
               first_fix = EXCLUDED.first_fix, last_fix = EXCLUDED.last_fix,
               min_lat = EXCLUDED.min_lat, min_lon = EXCLUDED.min_lon, max_lat = EXCLUDED.max_lat,
               max_lon = EXCLUDED.max_lon, refreshed_at = EXCLUDED.refreshed_at;
        SELECT count(DISTINCT (device_id, (bucket AT TIME ZONE 'UTC')::date)) INTO n_days FROM pgtrack_dirty_hours;

        INSERT INTO rollup_watermarks AS w (tenant_id, last_seq, refreshed_at) VALUES (t.tenant_id, upto, now())
        ON CONFLICT ON CONSTRAINT rollup_watermarks_pkey DO UPDATE SET last_seq = EXCLUDED.last_seq, refreshed_at = EXCLUDED.refreshed_at;

        tenant_id := t.tenant_id;
        from_seq := t.mark;
        to_seq := upto;
        hours_refreshed := n_hours;
        days_refreshed := n_days;
        caught_up := upto >= t.head;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Deletes rollups and compacted tracks older than their retention as of p_now (small tables:
-- a year of hours is a row per device and hour). Returns the rows deleted per table.
CREATE OR REPLACE FUNCTION pgtrack_expire_rollups(p_now timestamptz, OUT hourly bigint, OUT daily bigint, OUT tracks bigint)
LANGUAGE plpgsql AS $$
DECLARE
    s maintenance_settings;
BEGIN
    SELECT * INTO s FROM maintenance_settings;
    DELETE FROM rollup_device_hourly WHERE bucket < p_now - make_interval(days => s.rollup_retention_days);
    GET DIAGNOSTICS hourly = ROW_COUNT;
    DELETE FROM rollup_device_daily
     WHERE day < ((p_now - make_interval(days => s.rollup_retention_days)) AT TIME ZONE 'UTC')::date;
    GET DIAGNOSTICS daily = ROW_COUNT;
    DELETE FROM position_tracks WHERE bucket < p_now - make_interval(days => s.track_retention_days);
    GET DIAGNOSTICS tracks = ROW_COUNT;
END
$$;

-- Sets one retention or rollup setting by name (a column of maintenance_settings), the value
-- given as text and checked by the column's type and CHECK constraint. Returns the settings.
CREATE OR REPLACE FUNCTION pgtrack_set_maintenance_setting(p_name text, p_value text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    column_type text;
BEGIN
    SELECT format_type(a.atttypid, a.atttypmod) INTO column_type
      FROM pg_attribute a
     WHERE a.attrelid = 'maintenance_settings'::regclass AND a.attname = p_name AND a.attnum > 0
       AND NOT a.attisdropped AND p_name <> 'id';
    IF column_type IS NULL THEN
        RAISE EXCEPTION 'unknown maintenance setting "%"; known: %', p_name,
            (SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
              WHERE attrelid = 'maintenance_settings'::regclass AND attnum > 1 AND NOT attisdropped)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('UPDATE maintenance_settings SET %I = $1::%s', p_name, column_type) USING p_value;
    RETURN (SELECT to_jsonb(s) - 'id' FROM maintenance_settings s);
END
$$;
