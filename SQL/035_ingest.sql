-- The REST ingest path in one statement: restrict the transaction to the tenant (the role that
-- row-level security binds and the tenant its policies compare with, as
-- TrackingRepository.assumeTenant does) and insert the rows. A POST (or a group of POSTs of one
-- tenant, see IngestCoalescer) then costs one round trip, and its implicit transaction commits
-- in that same round trip, releasing the tenant's change-log head lock (taken by the
-- positions trigger) as early as a plain INSERT would.
-- p_rows: [{device, lat, lon, t (epoch seconds), speed?, heading?, altitude?, accuracy?,
-- battery?, booking_id?, attributes}] in arrival order. Returns the ids of the rows inserted, in
-- that order (ids are drawn as the ordered rows are inserted), and whether the tenant filters
-- fixes (then the caller reads back how the trigger judged them; dropped rows are gone).
DROP FUNCTION IF EXISTS pgtrack_ingest_positions(text, jsonb);
CREATE FUNCTION pgtrack_ingest_positions(p_tenant text, p_rows jsonb)
RETURNS TABLE (ids bigint[], filtering boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('role', 'pgtrack_tenant', true), set_config('pgtrack.tenant', p_tenant, true);
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location,
                               speed, heading, altitude, accuracy, battery, attributes)
        SELECT p_tenant, p.device, p.booking_id, to_timestamp(p.t),
               ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
               p.speed, p.heading, p.altitude, p.accuracy, p.battery, p.attributes
          FROM ROWS FROM (jsonb_to_recordset(p_rows) AS (
                   device uuid, lat float8, lon float8, t float8, speed float8, heading float8,
                   altitude float8, accuracy float8, battery float8, booking_id text, attributes jsonb))
               WITH ORDINALITY AS p(device, lat, lon, t, speed, heading, altitude, accuracy, battery,
                                    booking_id, attributes, ord)
         ORDER BY p.ord
        RETURNING positions.id
    )
    SELECT coalesce(array_agg(i.id ORDER BY i.id), '{}'),
           coalesce((SELECT pgtrack_filters_enabled(t) FROM tenants t WHERE t.id = p_tenant), false)
      FROM inserted i;
END
$$;
