-- Device lifecycle as SQL functions, so any program speaking SQL gets the same pushes as the
-- REST API: removing a marker keeps the history, purging removes both.

-- Removes the latest marker of a device (history kept) and logs `removed`. Returns the seq,
-- or NULL when the device has no marker (nothing to remove, nothing logged).
CREATE OR REPLACE FUNCTION pgtrack_remove_marker(p_tenant text, p_device uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM latest_positions WHERE device_id = p_device AND tenant_id = p_tenant;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN pgtrack_log_event(p_tenant, 'removed', p_device, NULL, jsonb_build_object('device_id', p_device));
END
$$;

-- Removes the marker and every stored position of a device and logs `purged` with the number
-- of positions deleted. Returns the seq. The device itself and its keys stay.
CREATE OR REPLACE FUNCTION pgtrack_purge_device(p_tenant text, p_device uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    deleted bigint;
BEGIN
    DELETE FROM latest_positions WHERE device_id = p_device AND tenant_id = p_tenant;
    DELETE FROM positions WHERE device_id = p_device AND tenant_id = p_tenant;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    -- Compacted history goes too; the rollups follow when their refresh meets the `purged` event.
    DELETE FROM position_tracks WHERE device_id = p_device AND tenant_id = p_tenant;
    -- The device's trips lost their points: their metadata starts over (from nothing).
    PERFORM pgtrack_trip_advance(tenant_id, booking_id, true) FROM trips WHERE device_id = p_device AND tenant_id = p_tenant;
    RETURN pgtrack_log_event(p_tenant, 'purged', p_device, NULL,
                             jsonb_build_object('device_id', p_device, 'positions_deleted', deleted));
END
$$;
