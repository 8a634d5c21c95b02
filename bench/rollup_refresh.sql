-- Time to bring the rollups up to date (pgtrack_refresh_rollups) for 1,000 devices:
--   1. the first minute of 60,000 fixes (new hours),
--   2. the next minute (hours that only gained later fixes: the extend path),
--   3. one late fix in each of the 1,000 hours (recomputed from their 121 raw points).
-- Run on a migrated database:  psql "$DATABASE_URL" -f bench/rollup_refresh.sql
-- Everything runs in one transaction that is rolled back (the refresh's advisory lock is
-- per transaction, so a running server's maintenance pass simply skips meanwhile).
\set ON_ERROR_STOP on
BEGIN;
SELECT pgtrack_ensure_partitions(now(), 30, 7) AS partitions_created;
INSERT INTO tenants (id, name) VALUES ('bench-rollups', 'Rollup benchmark');
INSERT INTO devices (id, tenant_id, name)
SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid, 'bench-rollups', 'van ' || g
  FROM generate_series(1, 1000) g;
-- Whatever other tenants have pending is refreshed first, outside the timings.
SELECT count(*) AS other_tenants_refreshed FROM pgtrack_refresh_rollups();
INSERT INTO positions (tenant_id, device_id, fix_time, location, speed)
SELECT 'bench-rollups', ('00000000-0000-4000-9000-' || lpad(d::text, 12, '0'))::uuid,
       date_trunc('hour', now()) - interval '1 hour' + s * interval '1 second',
       ST_SetSRID(ST_MakePoint(13.3 + d * 0.001 + s * 0.0001, 52.5), 4326)::geography, 8
  FROM generate_series(1, 1000) d, generate_series(0, 59) s;
\timing on
SELECT 'first minute (new hours)' AS step, sum(hours_refreshed) AS hours FROM pgtrack_refresh_rollups();
\timing off
INSERT INTO positions (tenant_id, device_id, fix_time, location, speed)
SELECT 'bench-rollups', ('00000000-0000-4000-9000-' || lpad(d::text, 12, '0'))::uuid,
       date_trunc('hour', now()) - interval '1 hour' + s * interval '1 second',
       ST_SetSRID(ST_MakePoint(13.3 + d * 0.001 + s * 0.0001, 52.5), 4326)::geography, 8
  FROM generate_series(1, 1000) d, generate_series(60, 119) s;
\timing on
SELECT 'next minute (extended)' AS step, sum(hours_refreshed) AS hours FROM pgtrack_refresh_rollups();
\timing off
INSERT INTO positions (tenant_id, device_id, fix_time, location, speed)
SELECT 'bench-rollups', ('00000000-0000-4000-9000-' || lpad(d::text, 12, '0'))::uuid,
       date_trunc('hour', now()) - interval '1 hour' + interval '30.5 seconds',
       ST_SetSRID(ST_MakePoint(13.3, 52.5), 4326)::geography, 8
  FROM generate_series(1, 1000) d;
\timing on
SELECT 'a late fix per hour (recomputed)' AS step, sum(hours_refreshed) AS hours FROM pgtrack_refresh_rollups();
\timing off
ROLLBACK;
