-- The REST ingest path in one statement: restrict the transaction to the tenant (the role that
-- row-level security binds and the tenant its policies compare with, as
-- TrackingRepository.assumeTenant does) and insert the rows. A POST (or a group of POSTs of one
-- tenant, see IngestCoalescer) then costs one round trip, and its implicit transaction commits
-- in that same round trip, releasing the tenant's change-log head lock (taken by the
-- positions trigger) as early as a plain INSERT would.
-- p_rows: [{device, lat, lon, t (epoch seconds), speed?, heading?, altitude?, accuracy?,
-- battery?, booking_id?, attributes}] in arrival order. Returns the number of rows stored.
CREATE OR REPLACE FUNCTION pgtrack_ingest_positions(p_tenant text, p_rows jsonb)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    stored integer;
BEGIN
    PERFORM set_config('role', 'pgtrack_tenant', true), set_config('pgtrack.tenant', p_tenant, true);
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
     ORDER BY p.ord;
    GET DIAGNOSTICS stored = ROW_COUNT;
    RETURN stored;
END
$$;
