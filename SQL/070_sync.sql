-- Applying CDC change events to the sync tables (Migrations/0004_sync.sql), in SQL so any
-- tool that can run SQL can feed them: pgtrack_sync_apply(tenant, event) for one event,
-- pgtrack_sync_apply_batch(tenant, events, dead_letter) for what POST /api/v1/sync/changes
-- receives. Events are Debezium envelopes, with or without the {"schema", "payload"} wrapper.

-- The names of the sync tables: the only targets dynamic SQL ever names.
CREATE OR REPLACE FUNCTION pgtrack_sync_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY['accounts', 'customers', 'products', 'orders', 'users']
$$;

-- An event error: SQLSTATE 22023 with a message that says what to fix.
CREATE OR REPLACE FUNCTION pgtrack_sync_reject(message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', message USING ERRCODE = 'invalid_parameter_value';
END
$$;

-- Functions whose arguments or results grew the source server (Migrations/0009) are dropped
-- first: CREATE OR REPLACE cannot change a result type, and an old signature left beside a
-- new one would make calls ambiguous.
DROP FUNCTION IF EXISTS pgtrack_sync_position(jsonb);
DROP FUNCTION IF EXISTS pgtrack_sync_newer(numeric[], timestamptz, numeric[], timestamptz);
DROP FUNCTION IF EXISTS pgtrack_sync_apply_one(text, jsonb);
DROP FUNCTION IF EXISTS pgtrack_sync_write(text, text, text, jsonb, boolean, numeric[], text, timestamptz);
DROP FUNCTION IF EXISTS pgtrack_sync_count(text, text, numeric[], text, timestamptz, bigint, bigint, bigint, text);

-- The position of a change in its source, from Debezium's `source` block: sortable numbers, a
-- readable text, and the server they belong to. PostgreSQL gives `lsn` (server NULL: one LSN
-- sequence, which a promoted standby continues); MySQL `file`, `pos` and `row` [file number,
-- pos, row] on server 'mysql:<server_id>', and with a GTID ("uuid:23", or "uuid:1-23" whose
-- last number counts) the transaction number as a fourth element and '/<uuid>' on the server.
CREATE OR REPLACE FUNCTION pgtrack_sync_position(src jsonb, OUT pos numeric[], OUT pos_text text, OUT server text)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    lsn bigint;
    gtid text[];
BEGIN
    IF jsonb_typeof(src -> 'lsn') = 'number' THEN
        lsn := (src ->> 'lsn')::bigint;
        pos := ARRAY[lsn::numeric];
        pos_text := upper(to_hex(lsn >> 32)) || '/' || upper(to_hex(lsn & 4294967295));
    ELSIF jsonb_typeof(src -> 'file') = 'string' AND jsonb_typeof(src -> 'pos') = 'number' THEN
        pos := ARRAY[coalesce(substring(src ->> 'file' FROM '([0-9]+)$')::numeric, 0), (src ->> 'pos')::numeric,
                     coalesce((src ->> 'row')::numeric, 0)];
        pos_text := (src ->> 'file') || ':' || (src ->> 'pos') || coalesce(':' || (src ->> 'row'), '');
        server := 'mysql:' || coalesce(substring(src ->> 'server_id' FROM '^[0-9]{1,20}$'), '');
        gtid := regexp_match(src ->> 'gtid', '^([^,]+):(?:[0-9]+-)?([0-9]{1,20})$');
        IF gtid IS NOT NULL THEN
            pos := pos || gtid[2]::numeric;
            server := server || '/' || lower(gtid[1]);
        END IF;
    END IF;
    IF jsonb_typeof(src -> 'gtid') = 'string' THEN
        pos_text := concat_ws(' ', pos_text, 'gtid ' || (src ->> 'gtid'));
    END IF;
END
$$;

-- Whether a change at (pos, server, ts) comes after the one stored at (old_pos, old_server,
-- old_ts). Equal is not newer: a redelivered event is skipped.
-- * Two GTIDs of one source uuid: by transaction number, whichever server's binlog they were
--   read from (a replica's binlog keeps the origin's GTIDs, at positions of its own).
-- * Positions of one server: by position when they differ. PostgreSQL has one LSN sequence
--   (server NULL). MySQL snapshot reads carry server_id 0 and the position the snapshot started
--   at in the binlog that streaming then follows, so 'mysql:0' (and 'mysql:' without a
--   server_id) compares with any MySQL server.
-- * Otherwise (another server_id after a failover, no position, the same position, a row
--   stored before Migrations/0009): by source time.
-- * One MySQL server_id whose position and time disagree: RESET MASTER restarts its binlog
--   (and GTIDs) at 1, so the change with the lower position may be the newer one. The time
--   decides when the lower one is in binlog file 1 and the other in a later file, or when the
--   two are more than a minute apart: streaming ts_ms is the commit time, and a change at a
--   higher position committed a minute earlier is no late delivery but the old epoch (a source
--   clock stepped back by more than a minute is then trusted over the position). Inside that
--   minute and inside one file number the position still wins, so a clock going back a little
--   does not reorder changes. Snapshot reads (ts_ms is the read time) never count as an epoch.
-- (PL/pgSQL so that the upsert that calls it once per event does not re-plan it each time.)
CREATE OR REPLACE FUNCTION pgtrack_sync_newer(pos numeric[], server text, ts timestamptz,
                                              old_pos numeric[], old_server text, old_ts timestamptz)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    host text := split_part(server, '/', 1);
    old_host text := split_part(old_server, '/', 1);
    any_mysql constant text[] := ARRAY['mysql:', 'mysql:0'];
    later boolean;
    lower_file numeric;
    upper_file numeric;
BEGIN
    IF pos IS NULL OR old_pos IS NULL THEN
        RETURN ts > old_ts;
    END IF;
    IF split_part(server, '/', 2) <> '' AND split_part(server, '/', 2) = split_part(old_server, '/', 2)
       AND pos[4] <> old_pos[4] THEN
        later := pos[4] > old_pos[4];
    ELSIF (host IS NOT DISTINCT FROM old_host
           OR host = ANY (any_mysql) AND old_host LIKE 'mysql:%' OR old_host = ANY (any_mysql) AND host LIKE 'mysql:%')
          AND pos[1:3] <> old_pos[1:3] THEN
        later := pos[1:3] > old_pos[1:3];
    ELSE
        RETURN ts > old_ts;
    END IF;
    IF host = old_host AND host LIKE 'mysql:%' AND NOT host = ANY (any_mysql)
       AND (later AND ts < old_ts OR NOT later AND ts > old_ts) THEN
        lower_file := CASE WHEN later THEN old_pos[1] ELSE pos[1] END;
        upper_file := CASE WHEN later THEN pos[1] ELSE old_pos[1] END;
        IF lower_file = 1 AND upper_file > 1 OR abs(extract(epoch FROM ts - old_ts)) > 60 THEN
            RETURN ts > old_ts;
        END IF;
    END IF;
    RETURN later;
END
$$;

-- Applies one change event to its sync table. Returns what happened ('applied', 'skipped' as
-- older than or equal to what is stored, 'ignored' for a tombstone) and where, without
-- touching sync_state (the callers count). Raises SQLSTATE 22023 for an event it cannot apply.
CREATE OR REPLACE FUNCTION pgtrack_sync_apply_one(p_tenant text, p_event jsonb,
    OUT outcome text, OUT target text, OUT source_table text, OUT pos numeric[], OUT pos_text text, OUT ts timestamptz,
    OUT server text)
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb := p_event;
    op text;
    src jsonb;
    key_column text;
    image jsonb;
    key jsonb;
    ts_ms numeric;
    problem text;
BEGIN
    -- Kafka tombstones (a null value) follow deletes for log compaction: nothing to apply.
    IF e IS NULL OR jsonb_typeof(e) = 'null' THEN
        outcome := 'ignored';
        RETURN;
    END IF;
    IF jsonb_typeof(e) <> 'object' THEN
        PERFORM pgtrack_sync_reject('an event is a JSON object (a Debezium envelope), not ' || jsonb_typeof(e));
    END IF;
    IF e ? 'payload' AND (e ? 'schema' OR NOT e ? 'op') THEN
        e := e -> 'payload';
        IF jsonb_typeof(e) = 'null' THEN
            outcome := 'ignored';
            RETURN;
        END IF;
        IF jsonb_typeof(e) <> 'object' THEN
            PERFORM pgtrack_sync_reject('payload: must be the envelope object');
        END IF;
    END IF;

    op := e ->> 'op';
    IF op IS NULL OR op NOT IN ('c', 'u', 'd', 'r') THEN
        PERFORM pgtrack_sync_reject(CASE WHEN op IS NULL THEN 'op: is required (c, u, d or r)'
                                         WHEN op = 't' THEN 'op: truncate events (t) are not applied; delete the rows instead'
                                         ELSE 'op: must be c, u, d or r, not ' || left(op, 20) END);
    END IF;
    src := e -> 'source';
    IF jsonb_typeof(src) IS DISTINCT FROM 'object' THEN
        PERFORM pgtrack_sync_reject('source: is required (the Debezium source block with table and ts_ms)');
    END IF;
    source_table := src ->> 'table';
    IF source_table IS NULL OR source_table = '' THEN
        PERFORM pgtrack_sync_reject('source.table: is required');
    END IF;

    SELECT m.target_table, m.key_column INTO target, key_column
      FROM sync.table_mappings m WHERE m.tenant_id = p_tenant AND m.source_table = pgtrack_sync_apply_one.source_table;
    IF NOT FOUND THEN
        IF source_table = ANY (pgtrack_sync_tables()) THEN
            target := source_table;
            key_column := 'id';
        ELSE
            PERFORM pgtrack_sync_reject(format('source.table: no sync table for %s; sync tables are %s, or map it with PUT /api/v1/sync/mappings',
                                               left(source_table, 100), array_to_string(pgtrack_sync_tables(), ', ')));
        END IF;
    END IF;

    ts_ms := CASE WHEN jsonb_typeof(src -> 'ts_ms') = 'number' THEN (src ->> 'ts_ms')::numeric
                  WHEN jsonb_typeof(e -> 'ts_ms') = 'number' THEN (e ->> 'ts_ms')::numeric END;
    IF ts_ms IS NULL OR ts_ms < 0 OR ts_ms > 32503680000000 THEN
        PERFORM pgtrack_sync_reject('source.ts_ms: is required, in milliseconds since 1970');
    END IF;
    ts := to_timestamp(ts_ms / 1000.0);
    SELECT p.pos, p.pos_text, p.server INTO pos, pos_text, server FROM pgtrack_sync_position(src) p;

    image := CASE WHEN op = 'd' THEN e -> 'before' ELSE e -> 'after' END;
    IF jsonb_typeof(image) IS DISTINCT FROM 'object' THEN
        PERFORM pgtrack_sync_reject(CASE WHEN op = 'd' THEN 'before: a delete needs the row before (at least its key)'
                                         ELSE 'after: a create, update or read needs the row after' END);
    END IF;
    IF target = 'customers' THEN
        -- A location that cannot be stored (a bad geometry struct, latitude/longitude out of
        -- range) fails this event with the reason: not the batch with an internal error, and
        -- not silently the row without its location.
        problem := pgtrack_sync_location_problem(image);
        IF problem IS NOT NULL THEN
            PERFORM pgtrack_sync_reject(CASE WHEN op = 'd' THEN 'before.' ELSE 'after.' END || problem);
        END IF;
    END IF;
    key := image -> key_column;
    IF key IS NULL OR jsonb_typeof(key) NOT IN ('string', 'number') OR length(key #>> '{}') NOT BETWEEN 1 AND 200 THEN
        PERFORM pgtrack_sync_reject(format('%s.%s: the primary key is required (a string or number of 1 to 200 characters)',
                                           CASE WHEN op = 'd' THEN 'before' ELSE 'after' END, key_column));
    END IF;

    outcome := pgtrack_sync_write(p_tenant, target, key #>> '{}', image, op = 'd', pos, pos_text, ts, server);
END
$$;

-- Why a customer row's location cannot be stored, or NULL when it can or there is none. A
-- `location` geometry struct needs a base64 WKB 2D point in lon/lat (SRID 4326, or 0/none for
-- 4326); without this check a bad struct failed inside PostGIS (SQLSTATE XX000, a 500) or, out
-- of range, was silently wrapped around the globe. Without a struct, the latitude/longitude
-- columns pgtrack_sync_location reads (the first of each that holds a number) must be in range:
-- out of range, pgtrack_sync_point gave no location and the row was applied without one.
CREATE OR REPLACE FUNCTION pgtrack_sync_location_problem(d jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    loc jsonb := d -> 'location';
    g geometry;
    k text;
    v double precision;
BEGIN
    IF jsonb_typeof(loc) IS DISTINCT FROM 'object' OR jsonb_typeof(loc -> 'wkb') IS DISTINCT FROM 'string' THEN
        k := CASE WHEN pgtrack_sync_number(d -> 'latitude') IS NOT NULL THEN 'latitude'
                  WHEN pgtrack_sync_number(d -> 'lat') IS NOT NULL THEN 'lat' END;
        v := pgtrack_sync_number(d -> k);
        IF v NOT BETWEEN -90 AND 90 THEN
            RETURN format('%s: %s is out of range (a latitude is -90 to 90)', k, left(d ->> k, 30));
        END IF;
        k := CASE WHEN pgtrack_sync_number(d -> 'longitude') IS NOT NULL THEN 'longitude'
                  WHEN pgtrack_sync_number(d -> 'lng') IS NOT NULL THEN 'lng'
                  WHEN pgtrack_sync_number(d -> 'lon') IS NOT NULL THEN 'lon' END;
        v := pgtrack_sync_number(d -> k);
        IF v NOT BETWEEN -180 AND 180 THEN
            RETURN format('%s: %s is out of range (a longitude is -180 to 180)', k, left(d ->> k, 30));
        END IF;
        RETURN NULL;
    END IF;
    IF coalesce(jsonb_typeof(loc -> 'srid'), 'null') <> 'null'
       AND (jsonb_typeof(loc -> 'srid') <> 'number' OR (loc ->> 'srid') !~ '^[0-9]{1,9}$'
            OR (loc ->> 'srid')::integer NOT IN (0, 4326)) THEN
        RETURN 'location.srid: must be 4326 (WGS 84 longitude/latitude), not ' || left(loc ->> 'srid', 20);
    END IF;
    BEGIN
        g := ST_GeomFromEWKB(decode(loc ->> 'wkb', 'base64'));
    EXCEPTION WHEN OTHERS THEN
        RETURN 'location.wkb: not a base64 WKB geometry (' || left(SQLERRM, 100) || ')';
    END;
    IF GeometryType(g) <> 'POINT' OR ST_IsEmpty(g) OR ST_NDims(g) <> 2 THEN
        RETURN 'location.wkb: must be a 2D point, not ' || CASE WHEN GeometryType(g) <> 'POINT' THEN lower(GeometryType(g))
                                                                WHEN ST_IsEmpty(g) THEN 'an empty point'
                                                                ELSE 'a ' || ST_NDims(g) || 'D point' END;
    END IF;
    IF ST_X(g) NOT BETWEEN -180 AND 180 OR ST_Y(g) NOT BETWEEN -90 AND 90 THEN
        RETURN format('location.wkb: longitude %s / latitude %s is out of range', ST_X(g), ST_Y(g));
    END IF;
    RETURN NULL;
END
$$;

-- A source position kept in a batch's per-table counts (JSON) back as numeric[]; NULL when the
-- newest change had none (a connector without lsn or binlog position: the time orders it).
CREATE OR REPLACE FUNCTION pgtrack_sync_json_position(j jsonb) RETURNS numeric[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF jsonb_typeof(j) IS DISTINCT FROM 'array' THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(SELECT x::numeric FROM jsonb_array_elements_text(j) x);
END
$$;

-- Writes one change to a sync table: insert, or overwrite only when newer, in one statement.
-- A delete leaves a tombstone that keeps the last image, so a late update (older position)
-- cannot bring the row back. Returns 'applied' or 'skipped'.
CREATE OR REPLACE FUNCTION pgtrack_sync_write(p_tenant text, p_target text, p_id text, p_image jsonb, p_deleted boolean,
    p_pos numeric[], p_pos_text text, p_ts timestamptz, p_server text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    done integer;
BEGIN
    IF NOT p_target = ANY (pgtrack_sync_tables()) THEN
        PERFORM pgtrack_sync_reject('no sync table ' || p_target);
    END IF;
    EXECUTE format($sql$
        INSERT INTO sync.%I AS r (tenant_id, id, data, deleted, source_position, source_position_text, source_ts,
                                  source_server, applied_at, deleted_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), CASE WHEN $4 THEN now() END)
        ON CONFLICT (tenant_id, id) DO UPDATE SET
            -- A delete keeps the row's last image: the stored one updated with the delete's
            -- `before` (the whole row with REPLICA IDENTITY FULL, else just the key), so the
            -- tombstone ends as the source last had the row even when updates arrived late.
            data = CASE WHEN excluded.deleted THEN r.data || excluded.data ELSE excluded.data END,
            deleted = excluded.deleted,
            source_position = excluded.source_position,
            source_position_text = excluded.source_position_text,
            source_ts = excluded.source_ts,
            source_server = excluded.source_server,
            applied_at = excluded.applied_at,
            deleted_at = excluded.deleted_at
        WHERE pgtrack_sync_newer(excluded.source_position, excluded.source_server, excluded.source_ts,
                                 r.source_position, r.source_server, r.source_ts)
        RETURNING 1
        $sql$, p_target)
        INTO done
        USING p_tenant, p_id, p_image, p_deleted, p_pos, p_pos_text, p_ts, p_server;
    RETURN CASE WHEN done = 1 THEN 'applied' ELSE 'skipped' END;
END
$$;

-- Counts what a batch did to one table: the newest change applied, applied/skipped/errors.
CREATE OR REPLACE FUNCTION pgtrack_sync_count(p_tenant text, p_table text, p_pos numeric[], p_pos_text text,
    p_ts timestamptz, p_applied bigint, p_skipped bigint, p_errors bigint, p_error text, p_server text DEFAULT NULL)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO sync.sync_state AS s (tenant_id, table_name, last_source_position, last_source_position_text,
                                      last_source_ts, last_source_server, last_applied_at, events_applied, events_skipped,
                                      errors, last_error, last_error_at)
    VALUES (p_tenant, p_table, p_pos, p_pos_text, p_ts, p_server, CASE WHEN p_applied > 0 THEN now() END,
            p_applied, p_skipped, p_errors, p_error, CASE WHEN p_error IS NOT NULL THEN now() END)
    ON CONFLICT (tenant_id, table_name) DO UPDATE SET
        (last_source_position, last_source_position_text, last_source_ts, last_source_server) =
            (SELECT CASE WHEN newer THEN p_pos ELSE s.last_source_position END,
                    CASE WHEN newer THEN p_pos_text ELSE s.last_source_position_text END,
                    CASE WHEN newer THEN p_ts ELSE s.last_source_ts END,
                    CASE WHEN newer THEN p_server ELSE s.last_source_server END
               FROM (SELECT p_ts IS NOT NULL AND (s.last_source_ts IS NULL OR
                            pgtrack_sync_newer(p_pos, p_server, p_ts, s.last_source_position, s.last_source_server,
                                               s.last_source_ts)) AS newer) n),
        last_applied_at = CASE WHEN p_applied > 0 THEN now() ELSE s.last_applied_at END,
        events_applied = s.events_applied + p_applied,
        events_skipped = s.events_skipped + p_skipped,
        errors = s.errors + p_errors,
        last_error = coalesce(p_error, s.last_error),
        last_error_at = CASE WHEN p_error IS NOT NULL THEN now() ELSE s.last_error_at END
$$;

-- Applies one change event and counts it: the function for tools that speak SQL.
CREATE OR REPLACE FUNCTION pgtrack_sync_apply(p_tenant text, p_event jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM pgtrack_sync_apply_one(p_tenant, p_event);
    IF r.target IS NOT NULL THEN
        PERFORM pgtrack_sync_count(p_tenant, r.target, CASE WHEN r.outcome = 'applied' THEN r.pos END, r.pos_text,
                                   CASE WHEN r.outcome = 'applied' THEN r.ts END,
                                   (r.outcome = 'applied')::int, (r.outcome = 'skipped')::int, 0, NULL,
                                   CASE WHEN r.outcome = 'applied' THEN r.server END);
    END IF;
    RETURN r.outcome;
END
$$;

-- Applies a batch (a JSON array of events, or one event) in the caller's transaction, in order,
-- and counts once per table. A bad event either fails the whole batch (SQLSTATE 22023, the
-- message starting with "event <index>: "), or with p_dead_letter goes to sync.dead_letters with
-- its reason while the others apply. Returns one row per event.
CREATE OR REPLACE FUNCTION pgtrack_sync_apply_batch(p_tenant text, p_events jsonb, p_dead_letter boolean)
RETURNS TABLE (index integer, outcome text, target_table text, error text)
LANGUAGE plpgsql AS $$
DECLARE
    events jsonb := CASE WHEN jsonb_typeof(p_events) = 'array' THEN p_events ELSE jsonb_build_array(p_events) END;
    event jsonb;
    i integer;
    r record;
    r_pos numeric[];
    r_pos_text text;
    r_ts timestamptz;
    r_server text;
    counts jsonb := '{}';
    message text;
    state text;
    tbl text;
    mapped text;
BEGIN
    BEGIN
        -- Iterate the elements once: `events -> i` in a loop would copy the whole array each time.
        FOR event, i IN SELECT e.value, e.n - 1 FROM jsonb_array_elements(events) WITH ORDINALITY AS e(value, n) LOOP
            index := i;
            error := NULL;
            IF NOT p_dead_letter THEN
                -- No subtransaction per event: the first error fails the batch (caught below, once).
                SELECT * INTO r FROM pgtrack_sync_apply_one(p_tenant, event);
            ELSE
                BEGIN
                    SELECT * INTO r FROM pgtrack_sync_apply_one(p_tenant, event);
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
                    -- Which table it was meant for, when that much can be read.
                    tbl := coalesce(event #>> '{payload,source,table}', event #>> '{source,table}');
                    SELECT m.target_table INTO mapped FROM sync.table_mappings m WHERE m.tenant_id = p_tenant AND m.source_table = tbl;
                    mapped := coalesce(mapped, CASE WHEN tbl = ANY (pgtrack_sync_tables()) THEN tbl END);
                    INSERT INTO sync.dead_letters (tenant_id, source_table, target_table, reason, event)
                    VALUES (p_tenant, left(tbl, 200), mapped, message, event);
                    error := message;
                    SELECT 'dead_lettered' AS outcome, mapped AS target, NULL::numeric[] AS pos, NULL::text AS pos_text,
                           NULL::timestamptz AS ts, NULL::text AS server INTO r;
                END;
            END IF;
            outcome := r.outcome;
            target_table := r.target;
            r_pos := r.pos;
            r_pos_text := r.pos_text;
            r_ts := r.ts;
            r_server := r.server;
            IF target_table IS NOT NULL THEN
                counts := jsonb_set(counts, ARRAY[target_table], coalesce(counts -> target_table, '{"applied":0,"skipped":0,"errors":0}')
                    || jsonb_build_object(
                        'applied', coalesce((counts #>> ARRAY[target_table, 'applied'])::bigint, 0) + (outcome = 'applied')::int,
                        'skipped', coalesce((counts #>> ARRAY[target_table, 'skipped'])::bigint, 0) + (outcome = 'skipped')::int,
                        'errors', coalesce((counts #>> ARRAY[target_table, 'errors'])::bigint, 0) + (outcome = 'dead_lettered')::int)
                    || CASE WHEN outcome = 'dead_lettered' THEN jsonb_build_object('error', error) ELSE '{}' END
                    || CASE WHEN outcome = 'applied' AND (counts #> ARRAY[target_table, 'ts'] IS NULL OR pgtrack_sync_newer(
                                r_pos, r_server, r_ts, pgtrack_sync_json_position(counts #> ARRAY[target_table, 'pos']),
                                counts #>> ARRAY[target_table, 'server'], (counts #>> ARRAY[target_table, 'ts'])::timestamptz))
                            THEN jsonb_build_object('pos', to_jsonb(r_pos), 'pos_text', r_pos_text, 'ts', r_ts, 'server', r_server)
                            ELSE '{}' END);
            END IF;
            RETURN NEXT;
        END LOOP;
        FOR tbl IN SELECT jsonb_object_keys(counts) LOOP
            PERFORM pgtrack_sync_count(p_tenant, tbl, pgtrack_sync_json_position(counts #> ARRAY[tbl, 'pos']),
                counts #>> ARRAY[tbl, 'pos_text'], (counts #>> ARRAY[tbl, 'ts'])::timestamptz,
                (counts #>> ARRAY[tbl, 'applied'])::bigint, (counts #>> ARRAY[tbl, 'skipped'])::bigint,
                (counts #>> ARRAY[tbl, 'errors'])::bigint, counts #>> ARRAY[tbl, 'error'], counts #>> ARRAY[tbl, 'server']);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
        RAISE EXCEPTION 'event %: %', i, message USING ERRCODE = state;
    END;
END
$$;

-- Health of a table's replication lag (seconds): healthy < 2 <= warning < 5 <= degraded < 10 <= critical.
CREATE OR REPLACE FUNCTION pgtrack_sync_lag_status(lag_seconds double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lag_seconds IS NULL THEN 'no_data'
                WHEN lag_seconds < 2 THEN 'healthy'
                WHEN lag_seconds < 5 THEN 'warning'
                WHEN lag_seconds < 10 THEN 'degraded'
                ELSE 'critical' END
$$;

-- The lag of every sync table of a tenant (all five; 'no_data' before the first event), as of
-- p_now: lag = p_now - source time of the newest change applied.
CREATE OR REPLACE FUNCTION pgtrack_sync_lag(p_tenant text, p_now timestamptz DEFAULT now())
RETURNS TABLE (table_name text, lag_seconds double precision, status text, last_source_ts timestamptz,
               last_source_position text, last_applied_at timestamptz, events_applied bigint, events_skipped bigint,
               errors bigint, last_error text, last_error_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT t.name, l.lag, pgtrack_sync_lag_status(l.lag), s.last_source_ts, s.last_source_position_text,
           s.last_applied_at, coalesce(s.events_applied, 0), coalesce(s.events_skipped, 0), coalesce(s.errors, 0),
           s.last_error, s.last_error_at
      FROM unnest(pgtrack_sync_tables()) WITH ORDINALITY AS t(name, n)
      LEFT JOIN sync.sync_state s ON s.tenant_id = p_tenant AND s.table_name = t.name
      CROSS JOIN LATERAL (SELECT CASE WHEN s.last_source_ts IS NOT NULL
                                      THEN greatest(extract(epoch FROM p_now - s.last_source_ts)::float8, 0) END AS lag) l
     ORDER BY t.n
$$;

-- The worst status of a set: critical > degraded > warning > healthy > no_data.
CREATE OR REPLACE FUNCTION pgtrack_sync_worst(statuses text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT s FROM unnest(statuses) s
                      ORDER BY array_position(ARRAY['critical', 'degraded', 'warning', 'healthy', 'no_data'], s) LIMIT 1),
                    'no_data')
$$;

-- Logs a `cdc_lag` event for every tenant that has sync state, at most once per p_period across
-- all nodes (each node's timer calls this; the first one in a period logs, the others find the
-- tick taken). Returns how many events it logged.
CREATE OR REPLACE FUNCTION pgtrack_sync_log_lag(p_period interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tenant text;
    logged integer := 0;
    tables jsonb;
BEGIN
    FOR tenant IN SELECT DISTINCT s.tenant_id FROM sync.sync_state s ORDER BY 1 LOOP
        INSERT INTO sync.lag_ticks AS k (tenant_id, logged_at) VALUES (tenant, now())
        ON CONFLICT (tenant_id) DO UPDATE SET logged_at = excluded.logged_at
            WHERE k.logged_at <= excluded.logged_at - p_period;
        CONTINUE WHEN NOT FOUND;
        SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                   'table', l.table_name, 'lag_seconds', round(l.lag_seconds::numeric, 3)::float8, 'status', l.status,
                   'last_source_ts', pgtrack_iso_time(l.last_source_ts), 'events_applied', l.events_applied,
                   'events_skipped', l.events_skipped, 'errors', l.errors)))
          INTO tables FROM pgtrack_sync_lag(tenant) l;
        PERFORM pgtrack_log_event(tenant, 'cdc_lag', NULL, NULL, jsonb_build_object(
            'status', pgtrack_sync_worst(ARRAY(SELECT t ->> 'status' FROM jsonb_array_elements(tables) t)),
            'at', pgtrack_iso_time(now()), 'tables', tables));
        logged := logged + 1;
    END LOOP;
    RETURN logged;
END
$$;

-- Forgets tombstones older than each tenant's sync_tombstone_days. Returns how many.
CREATE OR REPLACE FUNCTION pgtrack_sync_forget_tombstones() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    n bigint;
    total bigint := 0;
BEGIN
    FOREACH t IN ARRAY pgtrack_sync_tables() LOOP
        EXECUTE format('DELETE FROM sync.%I r USING tenants tn WHERE tn.id = r.tenant_id AND r.deleted
                          AND r.deleted_at < now() - make_interval(days => tn.sync_tombstone_days)', t);
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

-- The JSON of a sync row for the REST API, from to_jsonb(row): the source id and row, the
-- bookkeeping, and for customers the location as latitude/longitude and the geofence radius.
CREATE OR REPLACE FUNCTION pgtrack_sync_row_json(r jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
               'id', r ->> 'id',
               'deleted', CASE WHEN (r ->> 'deleted')::boolean THEN true END,
               'deleted_at', pgtrack_iso_time((r ->> 'deleted_at')::timestamptz),
               'source_position', r ->> 'source_position_text',
               'source_ts', pgtrack_iso_time((r ->> 'source_ts')::timestamptz),
               'applied_at', pgtrack_iso_time((r ->> 'applied_at')::timestamptz),
               'location', CASE WHEN r ->> 'location' IS NOT NULL THEN
                               (SELECT jsonb_build_object('latitude', round(ST_Y(g)::numeric, 7)::float8,
                                                          'longitude', round(ST_X(g)::numeric, 7)::float8)
                                  FROM (SELECT ST_GeomFromEWKB(decode(r ->> 'location', 'hex')) AS g) x) END,
               'geofence_radius_metres', (r ->> 'geofence_radius_metres')::float8))
           || jsonb_build_object('data', r -> 'data')
$$;

-- Live rows and tombstones of one sync table of a tenant.
CREATE OR REPLACE FUNCTION pgtrack_sync_counts(p_tenant text, p_table text, OUT live bigint, OUT dead bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT p_table = ANY (pgtrack_sync_tables()) THEN
        RAISE EXCEPTION 'no sync table %', p_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted) FROM sync.%I WHERE tenant_id = $1',
                   p_table)
        INTO live, dead USING p_tenant;
END
$$;

-- Native logical replication: a subscription fills a landing table that has the source
-- table's schema-qualified name and columns; this trigger forwards each replicated change to a
-- sync table, keyed by a column of the row. ENABLE ALWAYS makes it fire in the subscription's
-- apply worker too. The source time is the apply time (the commit time of the source is not
-- visible here), so the lag of such a table is ~0: watch pg_stat_subscription for the
-- replication's own lag. Arguments: tenant, target sync table, key column.
CREATE OR REPLACE FUNCTION pgtrack_sync_landing_trigger() RETURNS trigger
LANGUAGE plpgsql
-- Apply workers run with an empty search_path; pgtrack's functions and PostGIS live in public.
SET search_path = public, pg_temp
AS $$
DECLARE
    tenant text := TG_ARGV[0];
    target text := TG_ARGV[1];
    key_column text := TG_ARGV[2];
    image jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    ts timestamptz := clock_timestamp();
    outcome text;
BEGIN
    IF TG_OP = 'UPDATE' AND to_jsonb(OLD) -> key_column IS DISTINCT FROM image -> key_column THEN
        -- The key changed: the old row is gone from the source.
        PERFORM pgtrack_sync_write(tenant, target, to_jsonb(OLD) ->> key_column, to_jsonb(OLD), true, NULL, NULL, ts);
    END IF;
    outcome := pgtrack_sync_write(tenant, target, image ->> key_column, image, TG_OP = 'DELETE', NULL,
                                  'logical replication', ts);
    PERFORM pgtrack_sync_count(tenant, target, NULL, 'logical replication', CASE WHEN outcome = 'applied' THEN ts END,
                               (outcome = 'applied')::int, (outcome = 'skipped')::int, 0, NULL);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

-- Attaches a landing table to a sync table for one tenant (see pgtrack_sync_landing_trigger).
CREATE OR REPLACE FUNCTION pgtrack_sync_attach_landing(p_tenant text, p_landing regclass, p_target text,
                                                       p_key_column text DEFAULT 'id')
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT p_target = ANY (pgtrack_sync_tables()) THEN
        RAISE EXCEPTION 'no sync table %; sync tables are %', p_target, array_to_string(pgtrack_sync_tables(), ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM tenants WHERE id = p_tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % does not exist', p_tenant USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM 1 FROM pg_attribute WHERE attrelid = p_landing AND attname = p_key_column AND NOT attisdropped AND attnum > 0;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% has no column %', p_landing, p_key_column USING ERRCODE = 'undefined_column';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS pgtrack_sync_landing ON %s', p_landing);
    EXECUTE format('CREATE TRIGGER pgtrack_sync_landing BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION pgtrack_sync_landing_trigger(%L, %L, %L)', p_landing, p_tenant, p_target, p_key_column);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgtrack_sync_landing', p_landing);
END
$$;

-- Geofences come from the synced customers: a customer's location and radius as the source has
-- them now, so a customer moved in the source moves its geofence with the next change event.
-- The customers of a tenant whose geofence contains `p_location` (radius default p_default_radius
-- metres when the source gives none), nearest first.
CREATE OR REPLACE FUNCTION pgtrack_customer_geofences_at(p_tenant text, p_location geography,
                                                         p_default_radius double precision DEFAULT 100)
RETURNS TABLE (customer_id text, name text, distance_metres double precision, radius_metres double precision)
LANGUAGE sql STABLE AS $$
    SELECT c.id, c.name, ST_Distance(c.location, p_location), coalesce(c.geofence_radius_metres, p_default_radius)
      FROM sync.customers c
     WHERE c.tenant_id = p_tenant AND NOT c.deleted AND c.location IS NOT NULL
       AND ST_DWithin(c.location, p_location, coalesce(c.geofence_radius_metres, p_default_radius))
     ORDER BY ST_Distance(c.location, p_location), c.id
$$;
