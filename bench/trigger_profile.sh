#!/usr/bin/env bash
# Where a 100-fix INSERT into positions spends its time, statement by statement inside the
# triggers: auto_explain with nested statements and timing, on the fifth of five identical
# inserts (the first ones warm the plans). Prints each statement's top plan node time, and
# each insert inside a statement (the change log's is a CTE, timed apart from its top); the
# triggers' own statements are the change-log/latest upsert (WITH judged …), the doorbell
# (pgtrack_notify_logged_many) and the per-row checks (the foreign key's SELECT … FOR KEY
# SHARE, the running-trip lookup). Times include auto_explain's own overhead.
#
#   DATABASE_URL=postgres://… bench/trigger_profile.sh
#
# The database must be migrated; the script creates the tenant 'bench-prof' with 100 devices,
# writes 500 positions and removes the tenant at the end. The role must be a superuser
# (LOAD 'auto_explain'). Run it on a test database.
set -euo pipefail
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
: "${DATABASE_URL:?set DATABASE_URL to a migrated pgtrack database}"

psql() { command psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
cleanup() { psql -c "DELETE FROM tenants WHERE id = 'bench-prof'"; }
cleanup
trap cleanup EXIT
psql <<'SQL'
INSERT INTO tenants (id, name) VALUES ('bench-prof', 'trigger profile');
INSERT INTO devices (tenant_id, name) SELECT 'bench-prof', 'van ' || d FROM generate_series(1, 100) d;
SQL

insert="INSERT INTO positions (tenant_id, device_id, fix_time, location, speed, heading)
SELECT tenant_id, id, clock_timestamp(), ST_SetSRID(ST_MakePoint(13.4 + random() * 0.01, 52.5 + random() * 0.01), 4326)::geography, 8, 90
  FROM devices WHERE tenant_id = 'bench-prof';"

psql 2>&1 <<SQL | awk '
    /Query Text:/ { sub(/.*Query Text: /, ""); query = substr($0, 1, 70); want = 1; next }
    function ms() {
        match($0, /actual time=[0-9.]+\.\.[0-9.]+/); split(substr($0, RSTART + 12, RLENGTH - 12), t, /\.\./)
        match($0, /loops=[0-9]+/); return t[2] * substr($0, RSTART + 6, RLENGTH - 6)
    }
    # A statement'"'"'s top node; a data-modifying CTE (the change-log insert) is timed apart from it.
    want && /actual time=/ { total[query] += ms(); count[query]++; want = 0; next }
    /Insert on [a-z_]+ .*actual time=/ {
        match($0, /Insert on [a-z_]+/); key = "  (inside) " substr($0, RSTART, RLENGTH)
        total[key] += ms(); count[key]++
    }
    END { for (q in total) printf "%9.3f ms  %4d×  %s\n", total[q], count[q], q }' | sort -rn
$insert
$insert
$insert
$insert
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_analyze = on;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET client_min_messages = notice;
$insert
SQL
