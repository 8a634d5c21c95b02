-- Any change to a device or one of its keys, from the REST API or from plain SQL, rings the
-- node-wide key channel with the device's tenant: every node forgets what it remembered about
-- that tenant's keys (DeviceKeyCache), so a revoked key or a deleted device stops working
-- everywhere as soon as the change commits. New keys ring nothing: an unknown key is never
-- remembered. The channel name is DeviceKeyCache.channel. One ring per tenant per
-- transaction: PostgreSQL folds identical notifications of a transaction into one.

CREATE OR REPLACE FUNCTION pgtrack_device_keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant text;
BEGIN
    FOR tenant IN SELECT DISTINCT tenant_id FROM old_rows LOOP
        PERFORM pg_notify('pgtrack_device_keys', tenant);
    END LOOP;
    RETURN NULL;
END
$$;

-- A trigger with transition tables fires on one event only: one trigger each.
DROP TRIGGER IF EXISTS device_api_keys_update_ring ON device_api_keys;
CREATE TRIGGER device_api_keys_update_ring AFTER UPDATE ON device_api_keys
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_device_keys_changed();
DROP TRIGGER IF EXISTS device_api_keys_delete_ring ON device_api_keys;
CREATE TRIGGER device_api_keys_delete_ring AFTER DELETE ON device_api_keys
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_device_keys_changed();
DROP TRIGGER IF EXISTS devices_update_ring ON devices;
CREATE TRIGGER devices_update_ring AFTER UPDATE ON devices
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_device_keys_changed();
DROP TRIGGER IF EXISTS devices_delete_ring ON devices;
CREATE TRIGGER devices_delete_ring AFTER DELETE ON devices
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_device_keys_changed();

-- TRUNCATE has no rows to name a tenant by: it rings '*' (DeviceKeyCache.everyone), which
-- forgets every tenant. (TRUNCATE tenants CASCADE truncates devices and keys too.)
CREATE OR REPLACE FUNCTION pgtrack_device_keys_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgtrack_device_keys', '*');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS device_api_keys_truncate_ring ON device_api_keys;
CREATE TRIGGER device_api_keys_truncate_ring AFTER TRUNCATE ON device_api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_device_keys_truncated();
DROP TRIGGER IF EXISTS devices_truncate_ring ON devices;
CREATE TRIGGER devices_truncate_ring AFTER TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrack_device_keys_truncated();
