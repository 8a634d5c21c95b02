-- Shapes of the events in the change log and the doorbell that announces them.

-- Every tenant gets its change-log head when it is created, so writers can always lock it.
CREATE OR REPLACE FUNCTION pgtrack_tenants_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_log_heads (tenant_id) SELECT id FROM new_tenants ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS tenants_after_insert ON tenants;
CREATE TRIGGER tenants_after_insert AFTER INSERT ON tenants
    REFERENCING NEW TABLE AS new_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_tenants_after_insert();

-- Kinds of events only a tenant's admins receive, on the admin channel and room (the Swift
-- side names the same list: ChangeEvent.adminKinds).
CREATE OR REPLACE FUNCTION pgtrack_admin_kinds() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY['cdc_lag']
$$;

-- ISO-8601 UTC with milliseconds, the time format of every JSON the service emits.
CREATE OR REPLACE FUNCTION pgtrack_iso_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- The members of one position's JSON object, as JSON text without its braces: the one list of
-- a position's fields, for location_update events (SQL/030 wraps it in the event's text),
-- snapshots and the REST API (pgtrack_position_json). Built as text and parsed once:
-- jsonb_build_object turns every float into numeric, jsonb_strip_nulls and || each build the
-- object again, and that was the largest part of a change-log row's cost (with the doorbell
-- change below, bench/trigger_cost.sh's 60-row case went from 70–76 to 57 µs per row).
-- Absent fields are left out as jsonb_strip_nulls did. to_json quotes strings and writes a
-- non-finite float as a string ("Infinity"), as jsonb_build_object did.
CREATE OR REPLACE FUNCTION pgtrack_position_fields(
    device_id uuid, booking_id text, fix_time timestamptz, received_at timestamptz,
    location geography, speed double precision, heading double precision,
    altitude double precision, accuracy double precision, battery double precision,
    attributes jsonb
) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- Every member starts with a comma and is left out when its value is NULL (|| gives NULL,
    -- concat skips it); ltrim drops the first comma. A LEFT JOIN's all-NULL row gives
    -- "attributes":null, as before.
    SELECT ltrim(concat(',"device_id":"' || device_id || '"',
                        ',"booking_id":' || to_json(booking_id),
                        ',"latitude":' || to_json(round(ST_Y(location::geometry)::numeric, 7)::float8),
                        ',"longitude":' || to_json(round(ST_X(location::geometry)::numeric, 7)::float8),
                        ',"timestamp":"' || pgtrack_iso_time(fix_time) || '"',
                        ',"received_at":"' || pgtrack_iso_time(received_at) || '"',
                        ',"speed":' || to_json(speed),
                        ',"heading":' || to_json(heading),
                        ',"altitude":' || to_json(altitude),
                        ',"accuracy":' || to_json(accuracy),
                        ',"battery":' || to_json(battery),
                        -- Nulls inside attributes stay: they are the device's own JSON.
                        ',"attributes":' || coalesce(attributes::text, 'null')), ',')
$$;

-- The JSON of one position, shared by location_update events, snapshots and the REST API.
CREATE OR REPLACE FUNCTION pgtrack_position_json(
    device_id uuid, booking_id text, fix_time timestamptz, received_at timestamptz,
    location geography, speed double precision, heading double precision,
    altitude double precision, accuracy double precision, battery double precision,
    attributes jsonb
) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT ('{' || pgtrack_position_fields(device_id, booking_id, fix_time, received_at, location, speed, heading,
                                           altitude, accuracy, battery, attributes) || '}')::jsonb
$$;

-- Rings the doorbell for seqs just logged: for each tenant i, (p_first[i], p_last[i]]; a
-- multi-tenant insert rings once, not once per tenant.
-- Inline events carry their audience (device, group, grade; route for route rooms) so a node filters each stream by
-- its subscriber's scope without parsing the payload.
-- One NOTIFY on the tenant channel and one per booking touched, never one per row; events only
-- admins may see (pgtrack_admin_kinds: cdc_lag) also ring the tenant's admin channel. The
-- tenant channel still names them, so its seqs stay contiguous; nodes drop them there. Small
-- batches carry their events inline (the fast path); larger ones carry only the seq range and
-- the listener reads the rows from change_log. pg_notify's limit is 8000 bytes.
CREATE OR REPLACE FUNCTION pgtrack_notify_logged_many(p_tenants text[], p_first bigint[], p_last bigint[])
RETURNS void
LANGUAGE plpgsql
-- One generic plan, pruned to today's partition when it runs: a custom plan per call (what
-- plpgsql picks, as pruning makes it look cheaper) cost more to plan than to run.
SET plan_cache_mode = force_generic_plan
-- Always the primary key: a day's partition is new and never analyzed when a session first
-- plans this, so the planner takes it for ten pages and picks a sequential scan, which the
-- session then keeps while the partition grows. In the first minute of a fresh cluster
-- (before autovacuum's first ANALYZE) the raw writers of `pgtrack bench` read 74.7 million
-- rows that way in 5,084 scans and ran at 15,000 rows/s instead of 39,000; each new day's
-- partition starts the same way at midnight.
SET enable_seqscan = off
AS $$
DECLARE
    inline_limit constant integer := 7500;
    inline_rows  constant integer := 16;
    -- The caller logged these seqs in this transaction (it holds the tenants' head locks), so
    -- every row has created_at = now(): the scan is pruned to today's partition. Before, each
    -- call planned and read every day partition of change_log three times, 0.6 ms of the
    -- 1.0 ms a one-fix insert costs PostgreSQL (pgbench, fsync off).
    logged_at    constant timestamptz := now();
    grp          record;
    message      text;
BEGIN
    FOR grp IN
        WITH logged AS MATERIALIZED (
            SELECT c.tenant_id, c.seq, c.kind, c.booking_id,
                   -- Events are built only where they may go inline: a tenant range small
                   -- enough, or a booking's rows (a booking's share of a large batch is often
                   -- small, and inline it spares every node listening to it a read). For a
                   -- 100-fix batch without bookings they were JSON the size check then threw
                   -- away (bench/trigger_profile.sh shows this statement's share).
                   CASE WHEN r.last_seq - r.first_seq <= inline_rows THEN
                       jsonb_build_object('s', c.seq, 'k', c.kind, 'd', c.payload::text) END AS bare,
                   CASE WHEN r.last_seq - r.first_seq <= inline_rows OR c.booking_id IS NOT NULL THEN
                       jsonb_strip_nulls(jsonb_build_object('s', c.seq, 'k', c.kind, 'd', c.payload::text,
                           'v', c.device_id, 'g', c.device_group, 'r', c.device_grade, 'o', c.route_id)) END AS event
              FROM unnest(p_tenants, p_first, p_last) AS r(tenant_id, first_seq, last_seq)
              JOIN change_log c ON c.tenant_id = r.tenant_id AND c.seq > r.first_seq AND c.seq <= r.last_seq
                               AND c.created_at = logged_at
        )
        SELECT 'pgtrack.tenant.' || tenant_id AS channel, tenant_id, NULL::text AS booking_id, 1 AS ord,
               min(seq) AS lo, max(seq) AS hi, count(*) AS n,
               CASE WHEN count(*) <= inline_rows AND bool_and(event IS NOT NULL) THEN jsonb_agg(event ORDER BY seq) END AS events
          FROM logged
         GROUP BY tenant_id
        UNION ALL
        SELECT 'pgtrack.booking.' || booking_id, tenant_id, booking_id, 2, min(seq), max(seq), count(*),
               CASE WHEN count(*) <= inline_rows AND bool_and(event IS NOT NULL) THEN jsonb_agg(event ORDER BY seq) END
          FROM logged
         WHERE booking_id IS NOT NULL
         GROUP BY tenant_id, booking_id
        UNION ALL
        SELECT 'pgtrack.admin.' || tenant_id, tenant_id, NULL, 3, min(seq), max(seq), count(*),
               CASE WHEN count(*) <= inline_rows AND bool_and(bare IS NOT NULL) THEN jsonb_agg(bare ORDER BY seq) END
          FROM logged
         WHERE kind = ANY (pgtrack_admin_kinds())
         GROUP BY tenant_id
         ORDER BY 2, 4, 5
    LOOP
        message := jsonb_build_object('t', grp.tenant_id, 'b', grp.booking_id, 'f', grp.lo, 'l', grp.hi,
                                      'n', grp.n, 'e', grp.events)::text;
        IF octet_length(message) > inline_limit THEN  -- pg_notify limits bytes, not characters
            message := jsonb_build_object('t', grp.tenant_id, 'b', grp.booking_id, 'f', grp.lo, 'l', grp.hi,
                                          'n', grp.n)::text;
        END IF;
        PERFORM pg_notify(grp.channel, message);
    END LOOP;
END
$$;

-- The doorbell for one tenant's seqs (first_seq, last_seq].
CREATE OR REPLACE FUNCTION pgtrack_notify_logged(p_tenant text, first_seq bigint, last_seq bigint)
RETURNS void
LANGUAGE sql AS $$
    SELECT pgtrack_notify_logged_many(ARRAY[p_tenant], ARRAY[first_seq], ARRAY[last_seq])
$$;

-- Logs one event that is not a position (marker removed, history purged, …) and rings the
-- doorbell, in the caller's transaction. Returns its seq. The audience columns come from the
-- device, so scoped subscribers see exactly the lifecycle events of the devices they may see.
CREATE OR REPLACE FUNCTION pgtrack_log_event(p_tenant text, p_kind text, p_device uuid, p_booking text, p_payload jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_seq bigint;
    d_group text;
    d_grade integer;
BEGIN
    UPDATE change_log_heads SET last_seq = last_seq + 1 WHERE tenant_id = p_tenant RETURNING last_seq INTO new_seq;
    IF new_seq IS NULL THEN
        RAISE EXCEPTION 'tenant % does not exist', p_tenant USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF p_device IS NOT NULL THEN
        SELECT group_name, grade INTO d_group, d_grade FROM devices WHERE id = p_device AND tenant_id = p_tenant;
    END IF;
    INSERT INTO change_log (tenant_id, seq, kind, device_id, booking_id, payload, device_group, device_grade)
    VALUES (p_tenant, new_seq, p_kind, p_device, p_booking,
            jsonb_build_object('seq', new_seq, 'type', p_kind) || p_payload, d_group, d_grade);
    PERFORM pgtrack_notify_logged(p_tenant, new_seq - 1, new_seq);
    RETURN new_seq;
END
$$;
