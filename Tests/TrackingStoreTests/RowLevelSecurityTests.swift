import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Row-level security as plain SQL sees it: the `pgtrack_tenant` role, assumed either with
/// `SET ROLE` by the owner (as the service does) or inherited by a login role of its own,
/// reads and writes only the rows of the tenant named by `pgtrack.tenant`, whatever the query
/// says, and nothing at all when no tenant is set.
@Suite("row-level security", .timeLimit(.minutes(3)))
struct RowLevelSecurityTests {
    /// Every table with a tenant_isolation policy, and the column that names the tenant.
    static let tables: [(name: String, tenantColumn: String)] = [
        ("tenants", "id"), ("devices", "tenant_id"), ("device_api_keys", "tenant_id"), ("users", "tenant_id"),
        ("refresh_tokens", "tenant_id"), ("positions", "tenant_id"), ("latest_positions", "tenant_id"),
        ("change_log", "tenant_id"), ("change_log_heads", "tenant_id"), ("trips", "tenant_id"),
        ("sync.accounts", "tenant_id"), ("sync.customers", "tenant_id"), ("sync.products", "tenant_id"),
        ("sync.orders", "tenant_id"), ("sync.users", "tenant_id"), ("sync.sync_state", "tenant_id"),
        ("sync.table_mappings", "tenant_id"), ("sync.dead_letters", "tenant_id"), ("sync.lag_ticks", "tenant_id"),
        ("drivers", "tenant_id"), ("routes", "tenant_id"), ("visits", "tenant_id"),
        ("ingest_api_keys", "tenant_id"), ("device_events", "tenant_id"),
    ]

    /// Tables the tenant role may at most read (written by the maintenance pass as the owner),
    /// with the same policy.
    static let maintainedTables = ["rollup_device_hourly", "rollup_device_daily", "rollup_watermarks", "position_tracks",
                                   "analyst_accounts"]

    /// How a session becomes the tenant role.
    enum Session: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// The owner connects and runs `SET ROLE pgtrack_tenant`.
        case setRole
        /// A fresh LOGIN role granted pgtrack_tenant connects as itself.
        case loginRole

        var testDescription: String { self == .setRole ? "SET ROLE pgtrack_tenant" : "a login role granted pgtrack_tenant" }
    }

    // MARK: Reading

    @Test("with pgtrack.tenant set, the role sees exactly that tenant's rows in every RLS table", arguments: Session.allCases)
    func seesOnlyItsTenant(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        let expected = try await world.countsByTenant()
        try await withTenantRole(session, url) { connection in
            for tenant in ["acme", "globex"] {
                try await connection.rlsRun("SELECT set_config('pgtrack.tenant', \(tenant), false)")
                for table in Self.tables {
                    let (visible, foreign) = try await connection.rlsPair("""
                        SELECT count(*)::int, (count(*) FILTER (WHERE \(unescaped: table.tenantColumn) <> \(tenant)))::int
                          FROM \(unescaped: table.name)
                        """)
                    let own = expected[table.name]?[tenant] ?? -1
                    #expect(own > 0, "set-up left \(table.name) without rows of \(tenant)")
                    #expect(visible == own, "\(session): as \(tenant), \(table.name) shows \(visible) rows, the tenant has \(own)")
                    #expect(foreign == 0, "\(session): as \(tenant), \(table.name) shows \(foreign) rows of another tenant")
                }
            }
        }
    }

    @Test("with no tenant set (never set, or set to ''), the role sees no row at all", arguments: Session.allCases)
    func noTenantNoRows(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        let expected = try await world.countsByTenant()
        try await withTenantRole(session, url) { connection in
            let unset = try await connection.rlsValue("SELECT current_setting('pgtrack.tenant', true)", as: String?.self)
            #expect(unset == nil, "a fresh session must start without a tenant, found \(unset ?? "")")
            for table in Self.tables {
                #expect(expected[table.name]?.values.reduce(0, +) ?? 0 > 0, "set-up left \(table.name) empty")
                let visible = try await connection.rlsValue("SELECT count(*)::int FROM \(unescaped: table.name)", as: Int.self)
                #expect(visible == 0, "\(session): with no tenant, \(table.name) shows \(visible) rows")
            }
            // Set, then cleared: an empty setting is no tenant either.
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'acme', false)")
            let acmeDevices = try await connection.rlsValue("SELECT count(*)::int FROM devices", as: Int.self)
            #expect(acmeDevices == expected["devices"]?["acme"], "acme's devices are visible while acme is set")
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', '', false)")
            for table in Self.tables {
                let visible = try await connection.rlsValue("SELECT count(*)::int FROM \(unescaped: table.name)", as: Int.self)
                #expect(visible == 0, "\(session): with pgtrack.tenant = '', \(table.name) shows \(visible) rows")
            }
        }
    }

    // MARK: Writing

    @Test("inserting a row of another tenant (or moving a row to it) is an RLS violation, 42501", arguments: Session.allCases)
    func foreignInsertsRejected(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        let before = try await world.fingerprints(of: "globex")
        try await withTenantRole(session, url) { connection in
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'acme', false)")
            let g = world.globex
            let statements: [(String, PostgresQuery)] = [
                ("tenants", "INSERT INTO tenants (id, name) VALUES ('globex-2', 'Planted')"),
                ("devices", "INSERT INTO devices (tenant_id, name) VALUES ('globex', 'planted-device')"),
                ("device_api_keys", """
                    INSERT INTO device_api_keys (tenant_id, device_id, key_hash, key_prefix)
                    VALUES ('globex', \(g.device), sha256('planted-key'::bytea), 'pgt_plnt')
                    """),
                ("users", """
                    INSERT INTO users (tenant_id, email, name, role, password_hash)
                    VALUES ('globex', 'planted@globex.example', 'Planted', 'admin', 'x')
                    """),
                ("refresh_tokens", """
                    INSERT INTO refresh_tokens (tenant_id, user_id, family_id, token_hash, expires_at)
                    VALUES ('globex', \(g.user), gen_random_uuid(), sha256('planted-token'::bytea), now() + interval '1 day')
                    """),
                ("positions", """
                    INSERT INTO positions (tenant_id, device_id, fix_time, location)
                    VALUES ('globex', \(g.device), now() - interval '1 second',
                            ST_SetSRID(ST_MakePoint(0.5, 0.5), 4326)::geography)
                    """),
                ("latest_positions", """
                    INSERT INTO latest_positions (device_id, tenant_id, fix_time, received_at, location, attributes, seq)
                    VALUES (\(UUID()), 'globex', now(), now(), ST_SetSRID(ST_MakePoint(0.5, 0.5), 4326)::geography, '{}', 999)
                    """),
                ("change_log", """
                    INSERT INTO change_log (tenant_id, seq, kind, payload) VALUES ('globex', 999999, 'planted', '{}')
                    """),
                ("change_log_heads", "INSERT INTO change_log_heads (tenant_id) VALUES ('globex')"),
                ("sync.customers", """
                    INSERT INTO sync.customers (tenant_id, id, data, source_ts) VALUES ('globex', 'planted', '{}', now())
                    """),
                ("a sync change event", """
                    SELECT pgtrack_sync_apply('globex', '{"op":"c","after":{"id":"planted"},"source":{"table":"orders","ts_ms":1}}')
                    """),
                ("drivers", "INSERT INTO drivers (tenant_id, name) VALUES ('globex', 'planted-driver')"),
                ("ingest_api_keys", "INSERT INTO ingest_api_keys (tenant_id, name, key_hash) VALUES ('globex', 'planted', sha256('planted'::bytea))"),
                ("device_events", """
                    INSERT INTO device_events (tenant_id, device_id, type, event_time) VALUES ('globex', \(g.device), 'alarm', now())
                    """),
                ("devices (move)", "UPDATE devices SET tenant_id = 'globex' WHERE tenant_id = 'acme'"),
                ("users (move)", "UPDATE users SET tenant_id = 'globex' WHERE tenant_id = 'acme'"),
                ("positions (move)", "UPDATE positions SET tenant_id = 'globex' WHERE tenant_id = 'acme'"),
                ("tenants (rename)", "UPDATE tenants SET id = 'globex-3' WHERE id = 'acme'"),
            ]
            for (what, statement) in statements {
                await expectSQLState("42501", "\(session): \(what) for globex as acme", on: connection, statement)
            }
        }
        #expect(try await world.fingerprints(of: "globex") == before, "globex's rows changed")
        #expect(try await world.countsByTenant()["tenants"]?.count == 2, "no tenant was planted")
    }

    @Test("UPDATE and DELETE of another tenant's rows affect 0 rows, also without a tenant filter", arguments: Session.allCases)
    func foreignUpdatesAndDeletesTouchNothing(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        let before = try await world.fingerprints(of: "globex")
        let counts = try await world.countsByTenant()
        // A harmless assignment per table, so an UPDATE that did match a row would report it.
        let noOp = ["tenants": "name = name", "devices": "name = name", "device_api_keys": "key_prefix = key_prefix",
                    "users": "name = name", "refresh_tokens": "expires_at = expires_at", "positions": "speed = speed",
                    "latest_positions": "speed = speed", "change_log": "kind = kind", "change_log_heads": "last_seq = last_seq",
                    "trips": "status = status", "sync.accounts": "data = data", "sync.customers": "data = data",
                    "sync.products": "data = data", "sync.orders": "data = data", "sync.users": "data = data",
                    "sync.sync_state": "errors = errors", "sync.table_mappings": "key_column = key_column",
                    "sync.dead_letters": "reason = reason", "sync.lag_ticks": "logged_at = logged_at",
                    "drivers": "name = name", "routes": "status = status",
                    "visits": "status = status",
                    "ingest_api_keys": "name = name", "device_events": "type = type"]
        try await withTenantRole(session, url) { connection in
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'acme', false)")
            for table in Self.tables {
                let assignment = try #require(noOp[table.name])
                let updated = try await connection.rlsAffected("""
                    UPDATE \(unescaped: table.name) SET \(unescaped: assignment)
                     WHERE \(unescaped: table.tenantColumn) = 'globex' RETURNING 1
                    """)
                #expect(updated == 0, "\(session): UPDATE of globex's \(table.name) matched \(updated) rows")
                let deleted = try await connection.rlsAffected("""
                    DELETE FROM \(unescaped: table.name) WHERE \(unescaped: table.tenantColumn) = 'globex' RETURNING 1
                    """)
                #expect(deleted == 0, "\(session): DELETE of globex's \(table.name) matched \(deleted) rows")
            }
            // By primary key.
            let byKey: [(String, PostgresQuery)] = [
                ("device", "DELETE FROM devices WHERE id = \(world.globex.device) RETURNING 1"),
                ("user", "DELETE FROM users WHERE id = \(world.globex.user) RETURNING 1"),
                ("marker", "DELETE FROM latest_positions WHERE device_id = \(world.globex.device) RETURNING 1"),
                ("key", "UPDATE device_api_keys SET revoked_at = now() WHERE device_id = \(world.globex.device) RETURNING 1"),
                ("scope", #"UPDATE users SET scope = '{"groups":{}}' WHERE id = \#(world.globex.user) RETURNING 1"#),
            ]
            for (what, statement) in byKey {
                let affected = try await connection.rlsAffected(statement)
                #expect(affected == 0, "\(session): globex's \(what) by primary key: \(affected) rows affected")
            }
            // A query that forgot its tenant filter: only acme's rows are touched.
            let renamed = try await connection.rlsAffected("UPDATE devices SET name = name || '-renamed' RETURNING 1")
            #expect(renamed == counts["devices"]?["acme"], "\(session): an unfiltered UPDATE renamed \(renamed) devices")
            let revoked = try await connection.rlsAffected("UPDATE refresh_tokens SET revoked_at = now() RETURNING 1")
            #expect(revoked == counts["refresh_tokens"]?["acme"], "\(session): an unfiltered UPDATE revoked \(revoked) tokens")
            let wiped = try await connection.rlsAffected("DELETE FROM positions RETURNING 1")
            #expect(wiped == counts["positions"]?["acme"], "\(session): an unfiltered DELETE removed \(wiped) positions")
            let markers = try await connection.rlsAffected("DELETE FROM latest_positions RETURNING 1")
            #expect(markers == counts["latest_positions"]?["acme"], "\(session): an unfiltered DELETE removed \(markers) markers")
        }
        #expect(try await world.fingerprints(of: "globex") == before, "globex's rows changed")
        let after = try await world.countsByTenant()
        #expect((after["positions"]?["acme"] ?? 0) == 0, "acme's own positions were deleted (the role can write its own rows)")
    }

    @Test("the lifecycle functions called by acme for globex's device change nothing of globex", arguments: Session.allCases)
    func lifecycleFunctionsStayInTenant(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        let before = try await world.fingerprints(of: "globex")
        try await withTenantRole(session, url) { connection in
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'acme', false)")
            let removed = try await connection.rlsValue(
                "SELECT pgtrack_remove_marker('globex', \(world.globex.device))", as: Int64?.self)
            #expect(removed == nil, "\(session): removing globex's marker as acme logged seq \(removed.map(String.init) ?? "")")
            // The tenant's head is invisible, so logging for globex fails as for a missing tenant.
            await expectSQLState("23503", "\(session): purge of globex's device as acme", on: connection,
                                 "SELECT pgtrack_purge_device('globex', \(world.globex.device))")
            await expectSQLState("23503", "\(session): logging an event for globex as acme", on: connection,
                                 "SELECT pgtrack_log_event('globex', 'removed', \(world.globex.device), NULL, '{}'::jsonb)")
            // Acme's own device may be purged: the function itself works for the tenant.
            let seq = try await connection.rlsValue(
                "SELECT pgtrack_purge_device('acme', \(world.acme.device))", as: Int64.self)
            #expect(seq > 0)
        }
        #expect(try await world.fingerprints(of: "globex") == before, "globex's rows changed")
    }

    @Test("acme cannot write a marker naming globex's device, so globex's own fixes keep working", arguments: Session.allCases)
    func markerForForeignDevice(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        // A globex device that has no marker yet.
        let fresh = try await world.owner {
            try await $0.rlsValue("INSERT INTO devices (tenant_id, name) VALUES ('globex', 'globex-new') RETURNING id", as: UUID.self)
        }
        try await withTenantRole(session, url) { connection in
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'acme', false)")
            do {
                try await connection.rlsRun("""
                    INSERT INTO latest_positions (device_id, tenant_id, fix_time, received_at, location, attributes, seq)
                    VALUES (\(fresh), 'acme', now() + interval '1 day', now(),
                            ST_SetSRID(ST_MakePoint(0.5, 0.5), 4326)::geography, '{}', 1)
                    """)
                Issue.record("\(session): acme wrote a marker (tenant acme) for globex's device \(fresh)")
            } catch let error as PSQLError {
                #expect(["23503", "42501"].contains(error.sqlState ?? ""), "\(error.serverInfo?[.message] ?? "\(error)")")
            }
            // Globex, through the same role, posts a fix for that device: the trigger must upsert its marker.
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'globex', false)")
            try await connection.rlsRun("""
                INSERT INTO positions (tenant_id, device_id, fix_time, location)
                VALUES ('globex', \(fresh), now(), ST_SetSRID(ST_MakePoint(1.5, 1.5), 4326)::geography)
                """)
            let marker = try await connection.rlsValue(
                "SELECT count(*)::int FROM latest_positions WHERE device_id = \(fresh) AND tenant_id = 'globex'", as: Int.self)
            #expect(marker == 1, "\(session): globex's new device has no marker after its first fix")
        }
    }

    // MARK: Triggers

    @Test("the positions trigger logs, upserts the marker and rings the doorbell for inserts made as the tenant role",
          arguments: Session.allCases)
    func triggerWorksAsTenantRole(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        let before = try await world.fingerprints(of: "globex")
        let head = try await world.owner { try await $0.rlsValue("SELECT last_seq FROM change_log_heads WHERE tenant_id = 'acme'", as: Int64.self) }
        let device = world.acme.device
        let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme", "pgtrack.booking.trip-rls"]) {
            try await withTenantRole(session, url) { connection in
                try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'acme', false)")
                try await connection.rlsRun("""
                    INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location, speed)
                    SELECT 'acme', \(device), 'trip-rls', now() + make_interval(secs => g),
                           ST_SetSRID(ST_MakePoint(7.0 + g, 45.0), 4326)::geography, 3.5
                      FROM generate_series(1, 2) g
                    """)
                // Readable as the role too: the log and the head moved by two.
                let logged = try await connection.rlsValue("""
                    SELECT count(*)::int FROM change_log
                     WHERE seq > \(head) AND kind = 'location_update' AND device_id = \(device) AND booking_id = 'trip-rls'
                    """, as: Int.self)
                #expect(logged == 2, "\(session): \(logged) change_log rows for two inserted positions")
                let newHead = try await connection.rlsValue("SELECT last_seq FROM change_log_heads", as: Int64.self)
                #expect(newHead == head + 2)
            }
        }
        try await world.owner { owner in
            let marker = try await owner.rlsValue("""
                SELECT round(ST_X(location::geometry)::numeric, 3)::float8 FROM latest_positions WHERE device_id = \(device)
                """, as: Double.self)
            #expect(marker == 9.0, "the marker is the newer of the two fixes")
            let seqs = try await owner.rlsValue("""
                SELECT array_agg(seq ORDER BY seq) FROM change_log WHERE tenant_id = 'acme' AND seq > \(head)
                """, as: [Int64].self)
            #expect(seqs == [head + 1, head + 2])
        }
        let tenantBells = try received.doorbells("pgtrack.tenant.acme")
        #expect(tenantBells.count == 1, "one NOTIFY on the tenant channel: \(received.payloads("pgtrack.tenant.acme"))")
        #expect(tenantBells.first?.tenant == "acme")
        #expect(tenantBells.first?.first == head + 1 && tenantBells.first?.last == head + 2)
        let bookingBells = try received.doorbells("pgtrack.booking.trip-rls")
        #expect(bookingBells.count == 1 && bookingBells.first?.tenant == "acme" && bookingBells.first?.count == 2)
        #expect(try await world.fingerprints(of: "globex") == before, "globex's rows changed")
    }

    // MARK: Catalog

    @Test("RLS is enabled with a tenant_isolation policy on every tenant-owned table and every other table with a tenant_id")
    func catalog() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestDatabaseConnection.with(url) { owner in
            for name in Self.tables.map(\.name) + Self.maintainedTables {
                let enabled = try await owner.rlsValue("""
                    SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(\(name))
                    """, as: Bool.self)
                #expect(enabled, "row-level security is off on \(name)")
                let policies = try await owner.rlsValue("""
                    SELECT count(*)::int FROM pg_policy
                     WHERE polrelid = to_regclass(\(name)) AND polname = 'tenant_isolation' AND polcmd = '*'
                    """, as: Int.self)
                #expect(policies == 1, "\(name) has no tenant_isolation policy for every command")
            }
            // The policies bind the service's tenant role only: a setting any session may set
            // must not open rows to other roles (analysts are bound by policies of their own).
            let unbound = try await owner.rlsValue("""
                SELECT coalesce(array_agg(polrelid::regclass::text ORDER BY 1), '{}') FROM pg_policy
                 WHERE polname = 'tenant_isolation' AND polroles <> ARRAY['pgtrack_tenant'::regrole::oid]
                """, as: [String].self)
            #expect(unbound == [], "tenant_isolation policies not limited to pgtrack_tenant: \(unbound)")
            // A table added later with a tenant column must join the list (and get RLS), in the
            // sync schema too. sync.api_keys is the one exception to the list: the tenant role
            // has no privilege on it at all (keys are found by hash), and it has RLS all the same.
            let tenantTables = try await owner.rlsValue("""
                SELECT coalesce(array_agg(CASE WHEN n.nspname = 'public' THEN '' ELSE n.nspname || '.' END || c.relname
                                          ORDER BY n.nspname, c.relname), '{}') FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname IN ('public', 'sync')
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
                """, as: [String].self)
            #expect(Set(tenantTables).union(["tenants"])
                        == Set(Self.tables.map(\.name) + Self.maintainedTables).union(["sync.api_keys"]),
                    "tables with a tenant_id: \(tenantTables)")
            let keys = try await owner.rlsPair("""
                SELECT (SELECT relrowsecurity FROM pg_class WHERE oid = 'sync.api_keys'::regclass)::int,
                       has_table_privilege('pgtrack_tenant', 'sync.api_keys', 'SELECT, INSERT, UPDATE, DELETE')::int
                """)
            #expect(keys.0 == 1 && keys.1 == 0, "sync.api_keys: RLS on and no privilege for the tenant role")
            let role = try await owner.rlsPair("""
                SELECT (rolcanlogin OR rolsuper OR rolbypassrls)::int, 0 FROM pg_roles WHERE rolname = 'pgtrack_tenant'
                """)
            #expect(role.0 == 0, "pgtrack_tenant must be NOLOGIN, NOSUPERUSER and NOBYPASSRLS")
        }
    }

    @Test("a partition of positions read or written directly as the tenant role exposes no other tenant's rows",
          arguments: Session.allCases)
    func partitionsDirectly(_ session: Session) async throws {
        let url = try await TestCluster.freshDatabase()
        let world = try await TwoTenants.create(url)
        let partition = try await world.owner {
            try await $0.rlsValue("SELECT tableoid::regclass::text FROM positions WHERE tenant_id = 'globex' LIMIT 1", as: String.self)
        }
        let before = try await world.fingerprints(of: "globex")
        try await withTenantRole(session, url) { connection in
            try await connection.rlsRun("SELECT set_config('pgtrack.tenant', 'acme', false)")
            // Either the partition is not readable at all (42501) or it shows acme's rows only.
            do {
                let foreign = try await connection.rlsValue("""
                    SELECT count(*)::int FROM \(unescaped: partition) WHERE tenant_id <> 'acme'
                    """, as: Int.self)
                #expect(foreign == 0, "\(session): as acme, SELECT from partition \(partition) returns \(foreign) rows of globex")
            } catch let error as PSQLError where error.sqlState == "42501" {}
            do {
                let deleted = try await connection.rlsAffected("DELETE FROM \(unescaped: partition) WHERE tenant_id = 'globex' RETURNING 1")
                #expect(deleted == 0, "\(session): as acme, DELETE from partition \(partition) removed \(deleted) rows of globex")
            } catch let error as PSQLError where error.sqlState == "42501" {}
        }
        #expect(try await world.fingerprints(of: "globex") == before, "globex's rows changed")
    }
}

// MARK: - Set-up

/// Two tenants, acme and globex, with rows in every RLS table, written as the owner.
/// Acme gets 2 positions and globex 3, so a count taken from the wrong tenant shows.
private struct TwoTenants: Sendable {
    struct Rows: Sendable {
        let device: UUID
        let user: UUID
    }

    let url: DatabaseURL
    let acme: Rows
    let globex: Rows

    static func create(_ url: DatabaseURL) async throws -> TwoTenants {
        try await TestDatabaseConnection.with(url) { owner in
            try await owner.rlsRun("INSERT INTO tenants (id, name) VALUES ('acme', 'Acme'), ('globex', 'Globex')")
            func populate(_ tenant: String, positions: Int, longitude: Double) async throws -> Rows {
                let (device, user) = try await owner.rlsPair("""
                    WITH d AS (INSERT INTO devices (tenant_id, name) VALUES (\(tenant), \(tenant + "-van")) RETURNING id, tenant_id),
                         k AS (INSERT INTO device_api_keys (tenant_id, device_id, key_hash, key_prefix)
                               SELECT tenant_id, id, sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'pgt_test' FROM d),
                         u AS (INSERT INTO users (tenant_id, email, name, role, password_hash)
                               VALUES (\(tenant), \("admin@\(tenant).example"), 'Admin', 'admin', 'x') RETURNING id, tenant_id),
                         r AS (INSERT INTO refresh_tokens (tenant_id, user_id, family_id, token_hash, expires_at)
                               SELECT tenant_id, id, gen_random_uuid(), sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
                                      now() + interval '1 day' FROM u)
                    SELECT d.id, u.id FROM d, u
                    """, as: (UUID, UUID).self)
                try await owner.rlsRun("""
                    INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location, speed)
                    SELECT \(tenant), \(device), \("trip-" + tenant), now() - make_interval(secs => 60 - g),
                           ST_SetSRID(ST_MakePoint(\(longitude), 10.0 + g), 4326)::geography, 1.5
                      FROM generate_series(1, \(positions)) g
                    """)
                try await owner.rlsRun("SELECT pgtrack_trip_accept(\(tenant), \("trip-" + tenant), \(device))")
                // A row in every sync table, its state, a mapping, a dead letter and a lag tick.
                try await owner.rlsRun("""
                    SELECT count(*) FROM pgtrack_sync_apply_batch(\(tenant), (
                        SELECT jsonb_agg(jsonb_build_object('op', 'c', 'after', jsonb_build_object('id', 1, 'name', t),
                                         'source', jsonb_build_object('table', t, 'ts_ms', 1763900000000)))
                          FROM unnest(pgtrack_sync_tables()) t) || '[{"op":"x"}]'::jsonb, true)
                    """)
                try await owner.rlsRun("""
                    INSERT INTO sync.table_mappings (tenant_id, source_table, target_table) VALUES (\(tenant), 'crm', 'customers')
                    """)
                try await owner.rlsRun("INSERT INTO sync.lag_ticks (tenant_id, logged_at) VALUES (\(tenant), now())")
                try await owner.rlsRun("""
                    WITH d AS (INSERT INTO drivers (tenant_id, name, device_id) VALUES (\(tenant), 'Driver', \(device)) RETURNING id),
                         r AS (INSERT INTO routes (tenant_id, driver_id, scheduled_date) SELECT \(tenant), id, current_date FROM d RETURNING id)
                    INSERT INTO visits (tenant_id, route_id, customer_id, sequence) SELECT \(tenant), id, 'c1', 1 FROM r
                    """)
                try await owner.rlsRun("""
                    INSERT INTO ingest_api_keys (tenant_id, name, key_hash)
                    VALUES (\(tenant), 'traccar', sha256(convert_to(gen_random_uuid()::text, 'UTF8')))
                    """)
                try await owner.rlsRun("""
                    INSERT INTO device_events (tenant_id, device_id, type, event_time) VALUES (\(tenant), \(device), 'ignitionOn', now())
                    """)
                return Rows(device: device, user: user)
            }
            let acme = try await populate("acme", positions: 2, longitude: 13.4)
            let globex = try await populate("globex", positions: 3, longitude: -71.06)
            return TwoTenants(url: url, acme: acme, globex: globex)
        }
    }

    func owner<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await TestDatabaseConnection.with(url, body)
    }

    /// Rows per table per tenant, counted by the owner (who bypasses RLS).
    func countsByTenant() async throws -> [String: [String: Int]] {
        try await owner { owner in
            var counts: [String: [String: Int]] = [:]
            for table in RowLevelSecurityTests.tables {
                let rows = try await owner.query("""
                    SELECT \(unescaped: table.tenantColumn), count(*)::int FROM \(unescaped: table.name) GROUP BY 1
                    """, logger: TestCluster.logger)
                for try await (tenant, count) in rows.decode((String, Int).self) { counts[table.name, default: [:]][tenant] = count }
            }
            return counts
        }
    }

    /// A digest of every row of `tenant` per table: equal digests mean nothing was changed.
    func fingerprints(of tenant: String) async throws -> [String: String] {
        try await owner { owner in
            var digests: [String: String] = [:]
            for table in RowLevelSecurityTests.tables {
                digests[table.name] = try await owner.rlsValue("""
                    SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '')
                      FROM \(unescaped: table.name) x WHERE \(unescaped: table.tenantColumn) = \(tenant)
                    """, as: String.self)
            }
            return digests
        }
    }
}

/// Runs `body` on a connection that acts as `pgtrack_tenant`, then cleans up (the login role
/// is dropped even when `body` fails).
private func withTenantRole<T: Sendable>(
    _ session: RowLevelSecurityTests.Session, _ url: DatabaseURL, _ body: (PostgresConnection) async throws -> T
) async throws -> T {
    switch session {
    case .setRole:
        return try await TestDatabaseConnection.with(url) { connection in
            try await connection.rlsRun("SET ROLE pgtrack_tenant")
            let user = try await connection.rlsValue("SELECT current_user::text", as: String.self)
            #expect(user == "pgtrack_tenant")
            return try await body(connection)
        }
    case .loginRole:
        let role = "rls_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        try await TestDatabaseConnection.with(url) { owner in
            try await owner.rlsRun("CREATE ROLE \(unescaped: role) LOGIN")
            try await owner.rlsRun("GRANT pgtrack_tenant TO \(unescaped: role)")
        }
        let result: Result<T, any Error>
        do {
            var roleURL = url
            roleURL.username = role
            result = .success(try await TestDatabaseConnection.with(roleURL) { connection in
                let (user, privileged) = try await connection.rlsPair("""
                    SELECT current_user::text, (rolsuper OR rolbypassrls)::int FROM pg_roles WHERE rolname = current_user
                    """, as: (String, Int).self)
                #expect(user == role && privileged == 0, "connected as \(user), superuser or bypassrls: \(privileged)")
                return try await body(connection)
            })
        } catch {
            result = .failure(error)
        }
        try await TestDatabaseConnection.with(url) { owner in
            try await owner.rlsRun("DROP ROLE IF EXISTS \(unescaped: role)")
        }
        return try result.get()
    }
}

/// Expects `statement` to fail with `state`.
private func expectSQLState(_ state: String, _ what: String, on connection: PostgresConnection, _ statement: PostgresQuery,
                            sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        try await connection.rlsRun(statement)
        Issue.record("\(what): succeeded, expected SQLSTATE \(state)", sourceLocation: sourceLocation)
    } catch let error as PSQLError {
        #expect(error.sqlState == state, "\(what): SQLSTATE \(error.sqlState ?? "none"): \(error.serverInfo?[.message] ?? "\(error)")",
                sourceLocation: sourceLocation)
    } catch {
        Issue.record("\(what): \(error)", sourceLocation: sourceLocation)
    }
}

/// One direct connection, closed afterwards.
private enum TestDatabaseConnection {
    static func with<T: Sendable>(_ url: DatabaseURL, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await TestCluster.connect(url, applicationName: "pgtrack-rls-test")
        do {
            let result = try await body(connection)
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

extension PostgresConnection {
    /// Runs a statement and drains its rows, so an error in any row surfaces here.
    fileprivate func rlsRun(_ query: PostgresQuery) async throws {
        for try await _ in try await self.query(query, logger: TestCluster.logger) {}
    }

    /// The single value of a one-row, one-column query.
    fileprivate func rlsValue<T: PostgresDecodable & Sendable>(_ query: PostgresQuery, as type: T.Type) async throws -> T {
        for try await value in try await self.query(query, logger: TestCluster.logger).decode(T.self) { return value }
        throw NoRow(query: query.sql)
    }

    fileprivate func rlsPair(_ query: PostgresQuery) async throws -> (Int, Int) {
        try await rlsPair(query, as: (Int, Int).self)
    }

    fileprivate func rlsPair<A: PostgresDecodable & Sendable, B: PostgresDecodable & Sendable>(
        _ query: PostgresQuery, as type: (A, B).Type
    ) async throws -> (A, B) {
        for try await row in try await self.query(query, logger: TestCluster.logger).decode((A, B).self) { return row }
        throw NoRow(query: query.sql)
    }

    /// How many rows a statement with `RETURNING 1` touched.
    fileprivate func rlsAffected(_ query: PostgresQuery) async throws -> Int {
        var count = 0
        for try await _ in try await self.query(query, logger: TestCluster.logger) { count += 1 }
        return count
    }
}
