-- A change of what a user may see (scope or role), or the user's deletion, rings the user's
-- channel so every open session of that user re-reads its scope at once. The row is the
-- truth and the payload only says which version to expect; a node whose listener reconnects
-- re-reads the scope anyway, so a missed ring never leaves a stale view.

CREATE OR REPLACE FUNCTION pgtrack_users_scope_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.scope IS DISTINCT FROM OLD.scope OR NEW.role <> OLD.role OR NEW.device_id IS DISTINCT FROM OLD.device_id THEN
            NEW.scope_version := OLD.scope_version + 1;
        END IF;
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgtrack_users_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSIF NEW.scope_version = OLD.scope_version THEN
        RETURN NULL;
    ELSE
        r := NEW;
    END IF;
    PERFORM pg_notify('pgtrack.user.' || r.id,
                      jsonb_build_object('t', r.tenant_id, 'u', r.id,
                                         'v', CASE WHEN TG_OP = 'DELETE' THEN -1 ELSE r.scope_version END)::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS users_scope_version ON users;
CREATE TRIGGER users_scope_version BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION pgtrack_users_scope_changed();

DROP TRIGGER IF EXISTS users_scope_notify ON users;
CREATE TRIGGER users_scope_notify AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION pgtrack_users_notify();
