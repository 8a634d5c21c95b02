-- Fix filtering (the idea of Traccar's FilterHandler), per tenant, in the database: the
-- positions trigger (SQL/030) judges each inserted statement's rows here, so REST, the device
-- protocols and plain SQL writers are filtered alike. A filtered fix is stored with
-- filter_reason (mode 'flag') or deleted again (mode 'drop'); either way it never moves the
-- marker in latest_positions. Settings are columns of tenants (Migrations/0007); NULL is off.

-- Whether any filter of the tenant is on: the trigger skips judging entirely when none is.
CREATE OR REPLACE FUNCTION pgtrack_filters_enabled(t tenants) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t.filter_invalid OR t.filter_zero OR t.filter_duplicate OR t.filter_future_seconds IS NOT NULL
        OR t.filter_past_seconds IS NOT NULL OR t.filter_accuracy_metres IS NOT NULL OR t.filter_max_speed IS NOT NULL
        OR t.filter_min_period_seconds IS NOT NULL OR t.filter_jitter_metres IS NOT NULL
$$;

-- The filter that rejects one fix on its own (no previous fix needed), or NULL. In the order
-- Traccar checks them; the first that applies names the reason.
CREATE OR REPLACE FUNCTION pgtrack_fix_reason_alone(t tenants, r positions) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN r.filter_reason IS NOT NULL THEN r.filter_reason  -- a writer flagged it itself
        WHEN t.filter_invalid AND r.attributes -> 'valid' = 'false'::jsonb THEN 'invalid'
        WHEN t.filter_zero AND ST_X(r.location::geometry) = 0 AND ST_Y(r.location::geometry) = 0 THEN 'zero'
        WHEN t.filter_duplicate AND EXISTS (
                 SELECT 1 FROM positions p
                  WHERE p.device_id = r.device_id AND p.tenant_id = r.tenant_id
                    AND p.fix_time = r.fix_time AND p.id < r.id) THEN 'duplicate'
        WHEN r.fix_time > r.received_at + make_interval(secs => t.filter_future_seconds) THEN 'future'
        WHEN r.fix_time < r.received_at - make_interval(secs => t.filter_past_seconds) THEN 'past'
        WHEN r.accuracy > t.filter_accuracy_metres THEN 'accuracy'
        WHEN r.speed > t.filter_max_speed THEN 'max_speed'
    END
$$;

-- The filter that rejects a fix against the previous accepted fix of its device, or NULL.
-- Only a fix newer than that one is judged so: an older fix is history and moves nothing.
CREATE OR REPLACE FUNCTION pgtrack_fix_reason_after(
    t tenants, prev_time timestamptz, prev_location geography, r positions
) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    dt   double precision;
    dist double precision;
BEGIN
    IF prev_time IS NULL OR r.fix_time <= prev_time THEN
        RETURN NULL;
    END IF;
    dt := extract(epoch FROM r.fix_time - prev_time);
    IF t.filter_max_speed IS NOT NULL THEN
        dist := ST_Distance(prev_location, r.location);
        IF dist / dt > t.filter_max_speed THEN
            RETURN 'max_speed';
        END IF;
    END IF;
    -- Skip limit: after this long without an accepted fix, one is accepted even if it is close
    -- or soon, so a parked device's marker still says when it was last heard from.
    IF dt > t.filter_skip_limit_seconds THEN
        RETURN NULL;
    END IF;
    IF dt < t.filter_min_period_seconds THEN
        RETURN 'min_period';
    END IF;
    IF t.filter_jitter_metres IS NULL THEN
        RETURN NULL;
    END IF;
    dist := coalesce(dist, ST_Distance(prev_location, r.location));
    -- A parked vehicle's GPS wanders: a short move while (reportedly) standing still is noise.
    IF dist < t.filter_jitter_metres AND coalesce(r.speed, 0) <= t.filter_stationary_speed THEN
        RETURN 'jitter';
    END IF;
    RETURN NULL;
END
$$;

-- Judges the rows of one insert statement of one tenant: (id, reason) of each filtered row.
-- Rows are walked per device in fix-time order from the device's marker (the last accepted
-- fix), and each accepted row becomes the next one's predecessor, so a run of bad fixes is
-- compared with the last good one, never with each other.
CREATE OR REPLACE FUNCTION pgtrack_position_filter(t tenants, p_rows positions[])
RETURNS TABLE (id bigint, device_id uuid, fix_time timestamptz, reason text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = auto  -- not the triggers' generic plans: see pgtrack_trip_advance (SQL/060)
AS $$
DECLARE
    r          positions;
    cur_device uuid;
    prev_time  timestamptz;
    prev_loc   geography;
    why        text;
BEGIN
    FOR r IN SELECT * FROM unnest(p_rows) u ORDER BY u.device_id, u.fix_time, u.id LOOP
        IF cur_device IS DISTINCT FROM r.device_id THEN
            cur_device := r.device_id;
            SELECT lp.fix_time, lp.location INTO prev_time, prev_loc
              FROM latest_positions lp WHERE lp.device_id = r.device_id AND lp.tenant_id = r.tenant_id;
            IF NOT FOUND THEN
                prev_time := NULL; prev_loc := NULL;
            END IF;
        END IF;
        why := coalesce(pgtrack_fix_reason_alone(t, r), pgtrack_fix_reason_after(t, prev_time, prev_loc, r));
        IF why IS NOT NULL THEN
            id := r.id; device_id := r.device_id; fix_time := r.fix_time; reason := why;
            RETURN NEXT;
        ELSIF prev_time IS NULL OR r.fix_time > prev_time THEN
            prev_time := r.fix_time;
            prev_loc := r.location;
        END IF;
    END LOOP;
END
$$;

-- The tenant's filter settings as the REST API shows them.
CREATE OR REPLACE FUNCTION pgtrack_filter_settings_json(t tenants) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'mode', t.filter_mode, 'invalid', t.filter_invalid, 'zero', t.filter_zero, 'duplicate', t.filter_duplicate,
        'future_seconds', t.filter_future_seconds, 'past_seconds', t.filter_past_seconds,
        'accuracy_metres', t.filter_accuracy_metres, 'max_speed', t.filter_max_speed,
        'min_period_seconds', t.filter_min_period_seconds, 'jitter_metres', t.filter_jitter_metres,
        'stationary_speed', t.filter_stationary_speed, 'skip_limit_seconds', t.filter_skip_limit_seconds)
$$;
