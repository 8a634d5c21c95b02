-- Daily partitions of positions, created ahead of time. Called by `pgtrack migrate`, at
-- `pgtrack serve` start and hourly by the running service.

CREATE OR REPLACE FUNCTION pgtrack_ensure_position_partitions(days_back integer, days_ahead integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    today   date := (now() AT TIME ZONE 'UTC')::date;
    day     date;
    name    text;
    created integer := 0;
BEGIN
    IF days_back < 0 OR days_ahead < 0 THEN
        RAISE EXCEPTION 'partition window must not be negative (back %, ahead %)', days_back, days_ahead;
    END IF;
    -- Two nodes starting at once must not race to create the same partition.
    PERFORM pg_advisory_xact_lock(hashtext('pgtrack.position_partitions'));
    FOR day IN SELECT generate_series(today - days_back, today + days_ahead, interval '1 day')::date LOOP
        name := 'positions_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF positions FOR VALUES FROM (%L) TO (%L)',
                name, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
