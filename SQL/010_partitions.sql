-- Daily partitions of positions and of the change log, created ahead of time and dropped whole
-- when they leave the retention window. Called by `pgtrack migrate`, at `pgtrack serve` start,
-- by the maintenance service and by `pgtrack maintain`.

-- Creates the missing daily partitions named <prefix>YYYYMMDD of p_parent for p_first..p_last.
CREATE OR REPLACE FUNCTION pgtrack_ensure_daily_partitions(p_parent regclass, p_prefix text, p_first date, p_last date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day     date;
    name    text;
    created integer := 0;
BEGIN
    -- Two nodes starting at once must not race to create the same partition.
    PERFORM pg_advisory_xact_lock(hashtext('pgtrack.partitions.' || p_parent::text));
    FOR day IN SELECT generate_series(p_first, p_last, interval '1 day')::date LOOP
        name := p_prefix || to_char(day, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           name, p_parent, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Position partitions from days_back before p_now's day (never further back than the
-- positions retention keeps) to days_ahead after it, and change-log partitions from the day
-- before to days_ahead after. Returns how many partitions it created.
CREATE OR REPLACE FUNCTION pgtrack_ensure_partitions(p_now timestamptz, days_back integer, days_ahead integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    today date := (p_now AT TIME ZONE 'UTC')::date;
    keep  integer;
BEGIN
    IF days_back < 0 OR days_ahead < 0 THEN
        RAISE EXCEPTION 'partition window must not be negative (back %, ahead %)', days_back, days_ahead;
    END IF;
    SELECT positions_retention_days INTO keep FROM maintenance_settings;
    RETURN pgtrack_ensure_daily_partitions('positions', 'positions_p', today - least(days_back, coalesce(keep, days_back)), today + days_ahead)
         + pgtrack_ensure_daily_partitions('change_log', 'change_log_p', today - 1, today + days_ahead);
END
$$;

CREATE OR REPLACE FUNCTION pgtrack_ensure_position_partitions(days_back integer, days_ahead integer)
RETURNS integer
LANGUAGE sql AS $$
    SELECT pgtrack_ensure_partitions(now(), days_back, days_ahead)
$$;

-- The daily partitions of positions and change_log that lie wholly before their retention
-- window as of p_now, oldest first: what the next maintenance pass retires.
CREATE OR REPLACE FUNCTION pgtrack_expired_partitions(p_now timestamptz)
RETURNS TABLE (parent text, partition text, day date)
LANGUAGE sql STABLE AS $$
    WITH parts AS (
        SELECT parent.relname::text AS parent, child.relname::text AS partition,
               to_date(right(child.relname, 8), 'YYYYMMDD') AS day
          FROM pg_inherits i
          JOIN pg_class parent ON parent.oid = i.inhparent
          JOIN pg_class child ON child.oid = i.inhrelid
         WHERE parent.oid IN ('positions'::regclass, 'change_log'::regclass)
           AND child.relname ~ '^(positions|change_log)_p[0-9]{8}$'
    )
    SELECT p.parent, p.partition, p.day
      FROM parts p CROSS JOIN maintenance_settings s
     WHERE ((p.day + 1)::timestamp AT TIME ZONE 'UTC') <= p_now - CASE p.parent
               WHEN 'positions' THEN make_interval(days => s.positions_retention_days)
               ELSE make_interval(hours => s.change_log_retention_hours) END
     ORDER BY p.day, p.parent
$$;
