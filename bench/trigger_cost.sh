#!/usr/bin/env bash
# What PostgreSQL spends on an insert into positions, triggers included, measured with pgbench
# (one client per core, so the rates are CPU-bound: with fsync on they are also bounded by the
# commit flush). Each case inserts fixes for devices of 10 throw-away tenants, the shapes the
# REST ingest produces:
#   1 row                one fix per statement (an idle server's POST)
#   5 rows, 5 tenants    a group commit of five POSTs of different tenants
#   5 rows, 1 tenant     five fixes of one tenant
#   60 rows, 1 tenant    a batch
# the latency of one-row inserts at 50/s from one client (a machine that is mostly idle) and
# back to back from one client without waiting for the flush (the CPU cost of one insert),
# the same 60 rows into positions with its triggers and foreign key off (the role must be a
# superuser for that case), and into a plain table with positions' columns and indexes but no
# triggers, partitions or foreign keys (what storing the rows alone costs).
#
#   DATABASE_URL=postgres://… bench/trigger_cost.sh [seconds per case, default 10]
#
# The database must be migrated (pgtrack migrate, or a running pgtrack serve). The script
# creates tenants 'bench-trig-1'…'-10' with 60 devices each and the table bench_plain_positions,
# and removes them at the end. It writes positions on a live database: run it on a test one.
set -euo pipefail
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
: "${DATABASE_URL:?set DATABASE_URL to a migrated pgtrack database}"
seconds=${1:-10}
clients=$(nproc)
work=$(mktemp -d)

psql() { command psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
    psql -c "DELETE FROM tenants WHERE id LIKE 'bench-trig-%'" -c "DROP TABLE IF EXISTS bench_plain_positions, bench_trig_devices"
}
cleanup
# The fixtures go whichever way the script ends (a failed case included).
trap 'cleanup; rm -rf "$work"' EXIT
superuser=$(psql -At -c "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
psql <<'SQL'
INSERT INTO tenants (id, name) SELECT 'bench-trig-' || t, 'trigger cost ' || t FROM generate_series(1, 10) t;
INSERT INTO devices (tenant_id, name) SELECT 'bench-trig-' || t, 'van ' || d FROM generate_series(1, 10) t, generate_series(1, 60) d;
-- n: 1..600 in tenant order; k: the device's number within its tenant (1..60).
CREATE TABLE bench_trig_devices AS
SELECT row_number() OVER (ORDER BY tenant_id, name) AS n, tenant_id, id,
       row_number() OVER (PARTITION BY tenant_id ORDER BY name) AS k,
       substring(tenant_id FROM 12)::int AS t
  FROM devices WHERE tenant_id LIKE 'bench-trig-%';
CREATE UNIQUE INDEX ON bench_trig_devices (n);
CREATE INDEX ON bench_trig_devices (t, k);
CREATE TABLE bench_plain_positions (LIKE positions INCLUDING DEFAULTS INCLUDING INDEXES);
SQL

columns="tenant_id, device_id, fix_time, location, speed, heading"
values="tenant_id, id, clock_timestamp(), ST_SetSRID(ST_MakePoint(13.4 + random() * 0.01, 52.5 + random() * 0.01), 4326)::geography, 8, 90"
cat > "$work/one.sql" <<SQL
\set n random(1, 600)
INSERT INTO positions ($columns) SELECT $values FROM bench_trig_devices WHERE n = :n;
SQL
cat > "$work/five_tenants.sql" <<SQL
\set t random(1, 6)
\set k random(1, 60)
INSERT INTO positions ($columns) SELECT $values FROM bench_trig_devices WHERE t BETWEEN :t AND :t + 4 AND k = :k;
SQL
cat > "$work/five_one_tenant.sql" <<SQL
\set t random(1, 10)
\set k random(1, 56)
INSERT INTO positions ($columns) SELECT $values FROM bench_trig_devices WHERE t = :t AND k BETWEEN :k AND :k + 4;
SQL
cat > "$work/sixty.sql" <<SQL
\set t random(1, 10)
INSERT INTO positions ($columns) SELECT $values FROM bench_trig_devices WHERE t = :t;
SQL
# The same 60 rows into positions itself with every trigger off, the foreign key's included
# (session_replication_role = replica, which needs a superuser): what storing a fix in
# positions costs before any of pgtrack's work, the floor of any trigger design.
cat > "$work/sixty_no_triggers.sql" <<SQL
\set t random(1, 10)
SET session_replication_role = replica;
INSERT INTO positions ($columns) SELECT $values FROM bench_trig_devices WHERE t = :t;
SQL
cat > "$work/sixty_plain.sql" <<SQL
\set t random(1, 10)
INSERT INTO bench_plain_positions ($columns) SELECT $values FROM bench_trig_devices WHERE t = :t;
SQL

printf '%-34s %12s %12s %16s\n' "case ($clients clients, ${seconds} s)" statements/s rows/s "CPU µs per row*"
run() {
    local script=$1 rows=$2 label=$3
    local tps
    tps=$(pgbench -n -c "$clients" -j "$clients" -T "$seconds" -f "$work/$script" "$DATABASE_URL" 2>"$work/pgbench.err" \
          | awk '/^tps/ {print $3}') || true
    if [ -z "$tps" ]; then
        echo "$label: pgbench failed:" >&2
        tail -5 "$work/pgbench.err" >&2
        exit 1
    fi
    awk -v tps="$tps" -v rows="$rows" -v cores="$clients" -v label="$label" \
        'BEGIN { printf "%-34s %12.0f %12.0f %16.0f\n", label, tps, tps * rows, cores * 1e6 / (tps * rows) }'
}
run one.sql 1 "1 row"
run five_tenants.sql 5 "5 rows, 5 tenants"
run five_one_tenant.sql 5 "5 rows, 1 tenant"
run sixty.sql 60 "60 rows, 1 tenant"
if [ "$superuser" = t ]; then
    run sixty_no_triggers.sql 60 "60 rows, positions, triggers off"
else
    echo "60 rows, positions, triggers off: skipped (turning triggers off needs a superuser)"
fi
run sixty_plain.sql 60 "60 rows, plain table (no triggers)"
latency=$(pgbench -n -c 1 -R 50 -T "$seconds" -f "$work/one.sql" "$DATABASE_URL" 2>/dev/null \
          | awk '/^latency average/ {print $4}')
echo "1 row at 50/s from one client: ${latency} ms per insert (commit included)"
# Back to back from one client with asynchronous commit: no flush to wait for, so this is
# PostgreSQL's own time for a one-row insert with its triggers (plus one loopback round trip).
latency=$(PGOPTIONS="$PGOPTIONS -c synchronous_commit=off" pgbench -n -c 1 -T "$seconds" -f "$work/one.sql" "$DATABASE_URL" 2>/dev/null \
          | awk '/^latency average/ {print $4}')
echo "1 row back to back from one client, asynchronous commit: ${latency} ms per insert"
echo "* cores / rows per second: the whole machine's time per row (pgbench's own share included),"
echo "  an upper bound on PostgreSQL's CPU when the cases are CPU-bound (fsync off, or a fast disk)."
