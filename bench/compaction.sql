-- Bytes of a raw day of positions versus its compacted tracks (pgtrack_compact_positions).
-- Run on a migrated database whose partition for 5 days ago is empty, e.g. a fresh one:
--   psql "$DATABASE_URL" -f bench/compaction.sql
-- 20 devices, one fix every 5 s for 24 h (345,600 fixes, with speed, heading, accuracy and
-- battery as a phone sends them). Everything runs in one transaction that is rolled back.
\set ON_ERROR_STOP on
\timing on
BEGIN;
SELECT pgtrack_ensure_partitions(now(), 30, 7);
CREATE TEMP TABLE bench_day AS
SELECT (current_date - 5)::timestamp AT TIME ZONE 'UTC' AS day,
       format('positions_p%s', to_char(current_date - 5, 'YYYYMMDD'))::regclass AS part;
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM positions WHERE fix_time >= (SELECT day FROM bench_day)
                                        AND fix_time < (SELECT day FROM bench_day) + interval '1 day') THEN
        RAISE EXCEPTION 'the partition of 5 days ago holds data: run this on a fresh database';
    END IF;
END $$;
INSERT INTO tenants (id, name) VALUES ('bench-compaction', 'Compaction benchmark');
INSERT INTO devices (id, tenant_id, name)
SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'bench-compaction', 'van ' || g
  FROM generate_series(1, 20) g;
INSERT INTO positions (tenant_id, device_id, fix_time, location, speed, heading, accuracy, battery)
SELECT 'bench-compaction', ('00000000-0000-4000-8000-' || lpad(d::text, 12, '0'))::uuid,
       b.day + s * interval '5 seconds',
       ST_SetSRID(ST_MakePoint(13.3 + d * 0.01 + s * 0.00003, 52.45 + sin(s / 500.0) * 0.02), 4326)::geography,
       round((8 + 4 * sin(s / 50.0))::numeric, 2)::float8, (s % 360)::float8, 5 + s % 10, 100 - s / 1000.0
  FROM bench_day b, generate_series(1, 20) d, generate_series(0, 17279) s;
SELECT count(*) AS raw_rows, pg_size_pretty(pg_total_relation_size((SELECT part FROM bench_day))) AS raw_with_indexes,
       pg_total_relation_size((SELECT part FROM bench_day)) AS raw_bytes
  FROM positions WHERE tenant_id = 'bench-compaction';
SELECT pgtrack_compact_positions((SELECT part FROM bench_day)) AS tracks_written;
SELECT count(*) AS tracks, sum(point_count) AS points, sum(pg_column_size(t.*)) AS track_bytes,
       pg_size_pretty(sum(pg_column_size(t.*))) AS tracks_size,
       round(pg_total_relation_size((SELECT part FROM bench_day))::numeric / sum(pg_column_size(t.*)), 1) AS ratio
  FROM position_tracks t WHERE tenant_id = 'bench-compaction';
ROLLBACK;
