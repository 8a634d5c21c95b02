-- The REST ingest path in one statement: the rows of any number of POSTs, of any tenants,
-- inserted together (IngestCoalescer's group commit). A group then costs one round trip, one
-- commit and one doorbell, and the positions trigger works on it set-based across tenants.
-- p_rows: [{tenant, device, lat, lon, t (epoch seconds), speed?, heading?, altitude?,
-- accuracy?, battery?, booking_id?, attributes}] in arrival order. Returns the ids of the rows
-- inserted, in that order (ids are drawn as the ordered rows are inserted), and the tenants
-- among them that filter fixes (for their rows the caller reads back how the trigger judged
-- them; dropped rows are gone).
-- It runs as the service's own role, not as pgtrack_tenant: one transaction cannot be
-- restricted to several tenants. Each row's tenant comes from the authenticated device, and
-- the (tenant_id, device_id) foreign key refuses a device of another tenant.
DROP FUNCTION IF EXISTS pgtrack_ingest_positions(text, jsonb);
DROP FUNCTION IF EXISTS pgtrack_ingest_positions(jsonb);
CREATE FUNCTION pgtrack_ingest_positions(p_rows jsonb)
RETURNS TABLE (ids bigint[], filtering text[])
-- plpgsql, not sql: plpgsql keeps the statement's plan for the session; a SQL function is
-- planned again on every call.
LANGUAGE plpgsql AS $$
BEGIN
    -- This INSERT attaches fixes without a booking to their device's running trip itself
    -- (the join below, set-based), so the per-row trigger of SQL/060 stands aside for it: the
    -- setting names this statement (its start time), so a value set by hand or left behind
    -- matches no other statement, and it is cleared before anything else in the transaction.
    PERFORM set_config('pgtrack.trips_attached', statement_timestamp()::text, true);
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location,
                               speed, heading, altitude, accuracy, battery, attributes)
        SELECT p.tenant, p.device, coalesce(p.booking_id, running.booking_id), to_timestamp(p.t),
               ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
               p.speed, p.heading, p.altitude, p.accuracy, p.battery, p.attributes
          FROM ROWS FROM (jsonb_to_recordset(p_rows) AS (
                   tenant text, device uuid, lat float8, lon float8, t float8, speed float8, heading float8,
                   altitude float8, accuracy float8, battery float8, booking_id text, attributes jsonb))
               WITH ORDINALITY AS p(tenant, device, lat, lon, t, speed, heading, altitude, accuracy, battery,
                                    booking_id, attributes, ord)
          -- At most one: trips_one_active_per_device.
          LEFT JOIN trips running ON p.booking_id IS NULL AND running.device_id = p.device
                                 AND running.tenant_id = p.tenant AND running.status IN ('accepted', 'in_progress')
         ORDER BY p.ord
        RETURNING positions.id, positions.tenant_id
    )
    SELECT coalesce((SELECT array_agg(i.id ORDER BY i.id) FROM inserted i), '{}'),
           ARRAY(SELECT t.id FROM tenants t
                  WHERE t.id IN (SELECT DISTINCT i.tenant_id FROM inserted i) AND pgtrack_filters_enabled(t));
    PERFORM set_config('pgtrack.trips_attached', '', true);
END
$$;
