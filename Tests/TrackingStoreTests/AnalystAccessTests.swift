import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// An analyst login reads schema analytics for its own tenant only: no other tenant's rows,
/// no base tables, no writes, whatever it sets.
@Suite("analyst SQL access", .timeLimit(.minutes(2)))
struct AnalystAccessTests {
    static let views = ["latest_positions", "positions", "trips", "device_hourly_stats", "device_daily_stats",
                        "driver_daily_stats", "visit_completions", "device_tracks", "sync_lag"]

    /// Two tenants with a device, fixes, a trip, a compacted hour, rollups and sync state each.
    static func seed(_ client: PostgresClient) async throws {
        let repository = TrackingRepository(client: client, logger: TestCluster.logger)
        for (tenant, longitude) in [("acme", 13.4), ("globex", 2.35)] {
            let setup = try await TestTenant.create(repository, id: tenant)
            try await client.run("SELECT pgtrack_trip_accept(\(tenant), \("trip-" + tenant), \(setup.device.id))")
            try await TimeSeries.insert(TimeSeries.track(device: setup.device.id, start: TimeSeries.midnight(-3), count: 30,
                                                         longitude: longitude), tenant: tenant, client: client)
            // "Today" is the current UTC day: just after midnight, now() - 5 minutes is yesterday, and
            // the views would put the fixes and the visit on a day the test does not read.
            let todayStart = TimeSeries.midnight(0)
            try await TimeSeries.insert(TimeSeries.track(device: setup.device.id, start: max(Date().addingTimeInterval(-300), todayStart + 1),
                                                         count: 20, longitude: longitude), tenant: tenant, client: client)
            try await client.run("SELECT pgtrack_trip_finish(\(tenant), \("trip-" + tenant), 'completed')")
            try await client.run("""
                SELECT pgtrack_sync_apply(\(tenant), '{"op":"c","after":{"id":1,"name":"A"},"source":{"table":"accounts","ts_ms":1763900000000,"lsn":1}}')
                """)
            // A driver of the device whose route had one visit completed 20 minutes after arrival, today
            // (completed 10 minutes before now, or a minute after midnight when it is earlier than 00:11).
            try await client.run("""
                SELECT pgtrack_sync_apply(\(tenant), '{"op":"c","after":{"id":"c1","name":"Shop","latitude":52.5,"longitude":13.4},"source":{"table":"customers","ts_ms":1763900000000,"lsn":2}}')
                """)
            try await client.run("""
                WITH d AS (INSERT INTO drivers (tenant_id, name, device_id) VALUES (\(tenant), 'Driver', \(setup.device.id)) RETURNING id),
                     r AS (INSERT INTO routes (tenant_id, driver_id, scheduled_date) SELECT \(tenant), id, current_date FROM d RETURNING id)
                INSERT INTO visits (tenant_id, route_id, customer_id, sequence, status, window_start, window_end,
                                    arrived_at, completed_at)
                SELECT \(tenant), id, 'c1', 1, 'completed', a - interval '2 hours', a - interval '1 hour',
                       a - interval '30 minutes', a - interval '10 minutes'
                  FROM r, (SELECT greatest(now(), \(todayStart)::timestamptz + interval '11 minutes') AS a) AS anchor
                """)
        }
        _ = try await Maintenance(client: client, logger: TestCluster.logger).run(daysBack: 30, daysAhead: 7)
        try await client.run("SELECT pgtrack_compact_positions(\(RetentionTests.name("positions", TimeSeries.midnight(-3)))::regclass)")
    }

    /// A seeded database and a session of an analyst of acme on it.
    static func seededAnalyst() async throws -> (DatabaseURL, PostgresConnection) {
        let url = try await TestCluster.freshDatabase()
        let role = "analyst_" + UUID().uuidString.prefix(8).lowercased()
        try await TestCluster.withClient(url) { client in
            try await Self.seed(client)
            try await Maintenance(client: client, logger: TestCluster.logger).createAnalyst(tenant: "acme", role: role, password: "pw")
        }
        var analystURL = url
        analystURL.username = role
        analystURL.password = nil
        return (url, try await TestCluster.connect(analystURL))
    }

    @Test("each view shows the analyst's tenant and only it; another analyst sees the other tenant")
    func seesOnlyItsTenant() async throws {
        let (_, analyst) = try await Self.seededAnalyst()
        defer { Task { try? await analyst.close() } }
        for view in Self.views {
            var tenants: Set<String> = []
            var rows = 0
            for try await tenant in try await analyst.query(PostgresQuery(unsafeSQL: "SELECT tenant_id FROM analytics.\(view)"),
                                                            logger: TestCluster.logger).decode(String.self) {
                tenants.insert(tenant)
                rows += 1
            }
            #expect(tenants == ["acme"], "analytics.\(view): \(tenants)")
            #expect(rows > 0, "analytics.\(view) is empty for acme")
        }
        // Setting the service's tenant variable changes nothing for an analyst.
        for try await _ in try await analyst.query("SELECT set_config('pgtrack.tenant', 'globex', false)", logger: TestCluster.logger) {}
        let seen = try await analyst.query("SELECT count(*) FROM analytics.positions WHERE tenant_id = 'globex'",
                                           logger: TestCluster.logger).decode(Int.self).first { _ in true }
        #expect(seen == 0)
    }

    @Test("driver_daily_stats is the driver's device day plus visits completed; visit_completions compares plan and arrival")
    func driverAndVisitViews() async throws {
        let (_, analyst) = try await Self.seededAnalyst()
        defer { Task { try? await analyst.close() } }
        let rows = try await analyst.query("""
            SELECT d.points, d.visits_completed, coalesce(s.points, 0)
              FROM analytics.driver_daily_stats d
              LEFT JOIN analytics.device_daily_stats s ON s.day = d.day
             WHERE d.day = (now() AT TIME ZONE 'UTC')::date
            """, logger: TestCluster.logger).decode((Int, Int, Int).self)
        var today: [(Int, Int, Int)] = []
        for try await row in rows { today.append(row) }
        try #require(today.count == 1, "one driver-day today: \(today)")
        #expect(today[0].0 == today[0].2 && today[0].0 > 0, "the device day of the driver: \(today)")
        #expect(today[0].1 == 1)
        let visit = try await analyst.query("""
            SELECT customer_name, round(dwell_seconds)::int, arrived_in_window, round(late_seconds)::int
              FROM analytics.visit_completions
            """, logger: TestCluster.logger).decode((String?, Int, Bool, Int).self).first { _ in true }
        #expect(visit?.0 == "Shop" && visit?.1 == 1_200 && visit?.2 == false && visit?.3 == 1_800, "\(String(describing: visit))")
        // A table that never received a change has no lag (no_data), not a lag of 0.
        var lag: [String: String] = [:]
        for try await (table, status, noLag) in try await analyst.query(
            "SELECT table_name, status, lag_seconds IS NULL FROM analytics.sync_lag", logger: TestCluster.logger
        ).decode((String, String, Bool).self) {
            lag[table] = status + (noLag ? "/null" : "")
        }
        #expect(lag["products"] == "no_data/null", "\(lag)")
        check(lag["accounts"].map { !$0.hasPrefix("no_data") && !$0.hasSuffix("/null") } == true, "\(lag)")
    }

    @Test("an analyst cannot read base tables or the sync schema, cannot write, cannot become the tenant role")
    func cannotReachAround() async throws {
        let (url, analyst) = try await Self.seededAnalyst()
        defer { Task { try? await analyst.close() } }
        let refused = [
            "SELECT count(*) FROM positions", "SELECT count(*) FROM positions_p" + RetentionTests.name("positions", Date()).suffix(8),
            "SELECT count(*) FROM change_log", "SELECT count(*) FROM rollup_device_daily", "SELECT count(*) FROM analyst_accounts",
            "SELECT count(*) FROM sync.accounts", "SELECT count(*) FROM users",
            "DELETE FROM analytics.latest_positions", "UPDATE analytics.trips SET status = 'cancelled'",
            "INSERT INTO positions (tenant_id, device_id, fix_time, location) SELECT tenant_id, device_id, now(), location FROM analytics.latest_positions",
            "SELECT pgtrack_purge_device('acme', (SELECT device_id FROM analytics.latest_positions LIMIT 1))",
            "SET ROLE pgtrack_tenant", "SET ROLE pgtrack_analytics", "CREATE TABLE public.stolen (x int)",
        ]
        for statement in refused {
            do {
                for try await _ in try await analyst.query(PostgresQuery(unsafeSQL: statement), logger: TestCluster.logger) {}
                Issue.record("an analyst could run: \(statement)")
            } catch is PSQLError {
                // Refused, as it must be.
            }
        }
        let (positions, completed) = try await TestCluster.withClient(url) { client in
            (try await client.value("SELECT count(*) FROM positions WHERE tenant_id = 'acme'", as: Int.self),
             try await client.value("SELECT count(*) FROM trips WHERE status = 'completed'", as: Int.self))
        }
        #expect(positions == 50)
        #expect(completed == 2)
    }

    @Test("read-only holds by privileges: with its session defaults lifted an analyst still cannot write, create anything (temp tables, large objects) or write through a function")
    func writesRefusedWithDefaultsLifted() async throws {
        let (url, analyst) = try await Self.seededAnalyst()
        defer { Task { try? await analyst.close() } }
        func strings(_ sql: String) async throws -> [String] {
            var values: [String] = []
            for try await value in try await analyst.query(PostgresQuery(unsafeSQL: sql), logger: TestCluster.logger).decode(String.self) {
                values.append(value)
            }
            return values
        }
        // A login starts with these limits, but they are only session defaults: the analyst lifts them.
        #expect(try await strings("""
            SELECT concat_ws(' ', current_setting('default_transaction_read_only'), current_setting('statement_timeout'),
                             current_setting('idle_in_transaction_session_timeout'), rolconnlimit)
              FROM pg_roles WHERE rolname = current_user
            """) == ["on 5min 5min 10"])
        for statement in ["SET default_transaction_read_only = off", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                          "SET statement_timeout = 0", "SET idle_in_transaction_session_timeout = 0"] {
            for try await _ in try await analyst.query(PostgresQuery(unsafeSQL: statement), logger: TestCluster.logger) {}
        }
        #expect(try await strings("SHOW transaction_read_only") == ["off"])

        let event = #"{"op":"c","after":{"id":"x"},"source":{"table":"accounts","ts_ms":1763900000000,"lsn":9}}"#
        let refused = [
            "CREATE TEMP TABLE scratch (x int)", "CREATE TEMP VIEW scratch AS SELECT 1",
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "SELECT lo_create(0)", "SELECT lo_creat(-1)", "SELECT lo_from_bytea(0, 'x')",
            "CREATE TABLE public.stolen (x int)", "CREATE TABLE analytics.stolen (x int)", "CREATE SCHEMA stolen",
            "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "INSERT INTO tenants (id, name) VALUES ('x', 'x')", "UPDATE devices SET name = 'x'", "DELETE FROM trips",
            "TRUNCATE positions", "TRUNCATE sync.customers", "INSERT INTO spatial_ref_sys (srid) VALUES (900913)",
            "SELECT nextval('positions_id_seq')", "ALTER VIEW analytics.trips RENAME TO t",
            "ALTER ROLE CURRENT_USER CONNECTION LIMIT -1",
            // pgtrack's functions run with the caller's privileges.
            "SELECT pgtrack_sync_apply('acme', '\(event)')", "SELECT count(*) FROM pgtrack_sync_apply_batch('acme', '[\(event)]', true)",
            "SELECT pgtrack_purge_device('acme', (SELECT device_id FROM analytics.latest_positions LIMIT 1))",
            "SELECT pgtrack_create_analyst('acme', 'analyst_more', 'pw')", "SELECT pgtrack_drop_analyst(current_user)",
            "SELECT count(*) FROM pgtrack_refresh_rollups()", "SELECT pgtrack_sync_log_lag('1 second')",
        ]
        for statement in refused {
            do {
                for try await _ in try await analyst.query(PostgresQuery(unsafeSQL: statement), logger: TestCluster.logger) {}
                Issue.record("an analyst could run: \(statement)")
            } catch let error as PSQLError {
                #expect(error.sqlState == "42501", "\(statement): \(error.sqlState ?? "?") \(error.serverInfo?[.message] ?? "\(error)")")
            }
        }

        // Nothing grants more: no write privilege on any relation (but pg_settings, whose UPDATE is a
        // SET), no CREATE on any schema, no CREATE or TEMPORARY on the database, no large-object
        // creation, and every SECURITY DEFINER function it may execute is an extension's non-volatile
        // one or pgtrack_analyst_tenant.
        let granted = try await strings("""
            SELECT c.oid::regclass::text FROM pg_class c
             WHERE c.oid <> 'pg_catalog.pg_settings'::regclass AND CASE WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f')
                        THEN has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                        WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'USAGE, UPDATE') END
            UNION ALL
            SELECT 'schema ' || nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'CREATE')
            UNION ALL
            SELECT 'database ' || current_database() WHERE has_database_privilege(current_database(), 'CREATE, TEMPORARY')
            UNION ALL
            SELECT p.oid::regprocedure::text FROM pg_proc p
             WHERE has_function_privilege(p.oid, 'EXECUTE')
               AND (p.proname IN ('lo_create', 'lo_creat', 'lo_from_bytea', 'lo_import')
                    OR p.prosecdef AND p.proname <> 'pgtrack_analyst_tenant'
                       AND (p.provolatile = 'v' OR NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                                                  AND d.objid = p.oid AND d.deptype = 'e')))
            """)
        #expect(granted.isEmpty, "\(granted)")
        let largeObjects = try await TestCluster.withClient(url) { client in
            try await client.value("SELECT count(*) FROM pg_largeobject_metadata", as: Int.self)
        }
        #expect(largeObjects == 0)
    }

    @Test("every example query of the README's \"Querying with SQL\" runs as an analyst")
    func readmeExamplesRun() async throws {
        let readme = try String(contentsOf: TestCluster.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## Querying with SQL").dropFirst().first?
            .components(separatedBy: "\n## ").first)
        let blocks = section.components(separatedBy: "```sql\n").dropFirst().compactMap { $0.components(separatedBy: "```").first }
        let statements = blocks.flatMap(SQLScriptSplitter.split).filter {
            !$0.split(separator: "\n").allSatisfy { $0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }
        }
        #expect(statements.count >= 5, "the README lost its examples: \(statements.count)")

        let (_, analyst) = try await Self.seededAnalyst()
        defer { Task { try? await analyst.close() } }
        var withRows = 0
        for statement in statements {
            do {
                var rows = 0
                for try await _ in try await analyst.query(PostgresQuery(unsafeSQL: statement), logger: TestCluster.logger) {
                    rows += 1
                }
                if rows > 0 { withRows += 1 }
            } catch let error as PSQLError {
                Issue.record("README example failed: \(error.serverInfo?[.message] ?? "\(error)")\n\(statement)")
            }
        }
        #expect(withRows >= 4, "most examples should find the seeded data")
    }

    @Test("create-analyst refuses a bad role name, an unknown tenant and an existing role")
    func createRefusals() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            _ = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            let role = "analyst_" + UUID().uuidString.prefix(8).lowercased()
            try await maintenance.createAnalyst(tenant: "acme", role: role, password: "pw")
            for (tenant, name) in [("acme", "Bad-Name"), ("nope", "analyst_x" + UUID().uuidString.prefix(6).lowercased()),
                                   ("acme", role)] {
                await #expect(throws: MaintenanceError.self, "\(tenant) \(name)") {
                    try await maintenance.createAnalyst(tenant: tenant, role: name, password: "pw")
                }
            }
            #expect(try await maintenance.dropAnalyst(role: role))
            #expect(try await !maintenance.dropAnalyst(role: role))
        }
    }
}
