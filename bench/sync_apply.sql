-- Applies 10,000 Debezium change events (creates, then updates of the same rows, then the same
-- updates again: skipped as duplicates) in batches of 1,000 and prints the time of each pass.
-- Run against a pgtrack database (it creates and drops tenant bench_sync):
--   psql -h 127.0.0.1 -p 54329 -U postgres pgtrack -f bench/sync_apply.sql
\set ON_ERROR_STOP on
\timing on
DELETE FROM tenants WHERE id = 'bench_sync';
INSERT INTO tenants (id, name) VALUES ('bench_sync', 'Sync benchmark');
CREATE TEMP TABLE batches AS
SELECT pass, b, jsonb_agg(jsonb_build_object(
           'schema', jsonb_build_object('type', 'struct'),
           'payload', jsonb_build_object(
               'before', NULL,
               'after', jsonb_build_object('id', i, 'name', 'Customer ' || i, 'latitude', 52 + i / 100000.0,
                                           'longitude', 13 + i / 100000.0, 'geofence_radius_m', 50 + pass),
               'source', jsonb_build_object('connector', 'postgresql', 'table', 'customers',
                                            'ts_ms', 1763900000000 + (CASE WHEN pass = 3 THEN 2 ELSE pass END) * 100000 + i,
                                            'lsn', 1000000 + (CASE WHEN pass = 3 THEN 2 ELSE pass END) * 100000 + i),
               'op', CASE WHEN pass = 1 THEN 'c' ELSE 'u' END)) ORDER BY i) AS events
  FROM generate_series(1, 3) pass, generate_series(0, 9999) i, LATERAL (SELECT i / 1000 AS b) x
 GROUP BY pass, b;
\echo pass 1: 10,000 creates
SELECT sum((SELECT count(*) FROM pgtrack_sync_apply_batch('bench_sync', events, false))) FROM batches WHERE pass = 1;
\echo pass 2: 10,000 updates
SELECT sum((SELECT count(*) FROM pgtrack_sync_apply_batch('bench_sync', events, false))) FROM batches WHERE pass = 2;
\echo pass 3: 10,000 redelivered updates (all skipped)
SELECT sum((SELECT count(*) FROM pgtrack_sync_apply_batch('bench_sync', events, false))) FROM batches WHERE pass = 3;
SELECT events_applied, events_skipped FROM sync.sync_state WHERE tenant_id = 'bench_sync';
DELETE FROM tenants WHERE id = 'bench_sync';
