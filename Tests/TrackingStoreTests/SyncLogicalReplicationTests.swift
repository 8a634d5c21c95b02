import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The README's "native logical replication" path, proved with two local clusters: a source
/// PostgreSQL (wal_level = logical) publishes its business tables; pgtrack's database
/// subscribes into landing tables of the same names, and pgtrack_sync_attach_landing forwards
/// every replicated change (initial copy, insert, update, delete) into the tenant's sync tables.
@Suite("sync: native logical replication from a second cluster", .timeLimit(.minutes(3)))
struct SyncLogicalReplicationTests {
    @Test("a subscription fills sync.customers and sync.orders: initial copy, then inserts, updates and deletes")
    func subscriptionFillsSyncTables() async throws {
        let source = try await SourceCluster.start()
        do {
            try await Self.replicate(from: source)
        } catch {
            try? await offCooperativePool { source.remove() }
            throw error
        }
        try await offCooperativePool { source.remove() }
    }

    static func replicate(from source: SourceCluster) async throws {
        let target = try await TestCluster.freshDatabase()
        try await source.run("""
            CREATE SCHEMA app;
            CREATE TABLE app.customers (id bigint PRIMARY KEY, name text NOT NULL, latitude double precision,
                                        longitude double precision, geofence_radius_m double precision);
            CREATE TABLE app.orders (id text PRIMARY KEY, customer_id bigint, status text);
            INSERT INTO app.customers VALUES (1, 'Ada', 52.52, 13.405, 120), (2, 'Bob', 48.85, 2.35, NULL);
            INSERT INTO app.orders VALUES ('o-1', 1, 'new');
            CREATE PUBLICATION pgtrack_pub FOR TABLE app.customers, app.orders;
            """)

        let subscription = "pgtrack_sub_\(UInt32.random(in: 1...UInt32.max))"
        try await TestCluster.withClient(target) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            try await repository.createTenant(id: TenantID("acme")!, name: "Acme")
            try await Self.run(client, """
                CREATE SCHEMA app;
                CREATE TABLE app.customers (id bigint PRIMARY KEY, name text NOT NULL, latitude double precision,
                                            longitude double precision, geofence_radius_m double precision);
                CREATE TABLE app.orders (id text PRIMARY KEY, customer_id bigint, status text);
                SELECT pgtrack_sync_attach_landing('acme', 'app.customers', 'customers');
                SELECT pgtrack_sync_attach_landing('acme', 'app.orders', 'orders');
                """)
            // CREATE SUBSCRIPTION cannot run in a transaction block: one statement on its own.
            try await client.query(PostgresQuery(unsafeSQL: """
                CREATE SUBSCRIPTION \(subscription) CONNECTION '\(source.connectionString)' PUBLICATION pgtrack_pub
                """), logger: TestCluster.logger)
            do {
                try await Self.waitFor(client, "the initial copy") {
                    let customers = try await Self.customers(client)
                    let orders = try await Self.orders(client)
                    return customers == ["1": "Ada@52.52,13.405 r120", "2": "Bob@48.85,2.35"] && orders == ["o-1": "1 new"]
                }

                try await source.run("""
                    INSERT INTO app.customers VALUES (3, 'Cy', 40.0, -3.7, 50);
                    UPDATE app.customers SET latitude = 52.53, name = 'Ada L' WHERE id = 1;
                    DELETE FROM app.customers WHERE id = 2;
                    UPDATE app.orders SET status = 'shipped' WHERE id = 'o-1';
                    """)
                try await Self.waitFor(client, "the streamed changes") {
                    let customers = try await Self.customers(client)
                    let orders = try await Self.orders(client)
                    return customers == ["1": "Ada L@52.53,13.405 r120", "3": "Cy@40.0,-3.7 r50"] && orders == ["o-1": "1 shipped"]
                }
                // The delete left a tombstone, and the state counts every change applied.
                let tombstones = try await Self.scalar(client, "SELECT count(*)::int8 FROM sync.customers WHERE deleted AND id = '2'")
                #expect(tombstones == 1)
                let applied = try await Self.scalar(client, """
                    SELECT events_applied FROM sync.sync_state WHERE tenant_id = 'acme' AND table_name = 'customers'
                    """)
                #expect(applied == 5, "2 copied + insert + update + delete")
            } catch {
                try? await Self.dropSubscription(client, subscription)
                throw error
            }
            try await Self.dropSubscription(client, subscription)
        }
    }

    // MARK: Helpers

    static func run(_ client: PostgresClient, _ script: String) async throws {
        try await client.withConnection { connection in
            for statement in SQLScriptSplitter.split(script) {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: TestCluster.logger)
            }
        }
    }

    static func scalar(_ client: PostgresClient, _ sql: String) async throws -> Int64? {
        let rows = try await client.query(PostgresQuery(unsafeSQL: sql), logger: TestCluster.logger)
        for try await value in rows.decode(Int64.self) { return value }
        return nil
    }

    /// Live customers as "name@lat,lon rRADIUS", read from the generated columns.
    static func customers(_ client: PostgresClient) async throws -> [String: String] {
        let rows = try await client.query("""
            SELECT id, name, ST_Y(location::geometry), ST_X(location::geometry), geofence_radius_metres
              FROM sync.customers WHERE tenant_id = 'acme' AND NOT deleted
            """, logger: TestCluster.logger)
        var result: [String: String] = [:]
        for try await (id, name, lat, lon, radius) in rows.decode((String, String?, Double?, Double?, Double?).self) {
            result[id] = "\(name ?? "-")@\(lat.map { "\($0)" } ?? "-"),\(lon.map { "\($0)" } ?? "-")" + (radius.map { " r\(Int($0))" } ?? "")
        }
        return result
    }

    static func orders(_ client: PostgresClient) async throws -> [String: String] {
        let rows = try await client.query("""
            SELECT id, customer_id, status FROM sync.orders WHERE tenant_id = 'acme' AND NOT deleted
            """, logger: TestCluster.logger)
        var result: [String: String] = [:]
        for try await (id, customer, status) in rows.decode((String, String?, String?).self) {
            result[id] = "\(customer ?? "-") \(status ?? "-")"
        }
        return result
    }

    /// Polls `condition` every 100 ms for up to 30 s (replication is asynchronous).
    static func waitFor(_ client: PostgresClient, _ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        let customers = try await Self.customers(client)
        let orders = try await Self.orders(client)
        Issue.record("\(what) did not arrive within 30 s: customers \(customers), orders \(orders); \(try await diagnosis(client))")
        throw CancellationError()
    }

    /// The subscription's state and the end of the subscriber's server log, for a failure message.
    static func diagnosis(_ client: PostgresClient) async throws -> String {
        let rows = try await client.query("""
            SELECT s.subname || ' ' || coalesce(r.srrelid::regclass::text, '-') || ' state ' || coalesce(r.srsubstate::text, '-'),
                   current_setting('data_directory')
              FROM pg_subscription s LEFT JOIN pg_subscription_rel r ON r.srsubid = s.oid
            """, logger: TestCluster.logger)
        var states: [String] = []
        var log = ""
        for try await (state, dataDirectory) in rows.decode((String, String).self) {
            states.append(state)
            let logFile = URL(fileURLWithPath: dataDirectory).deletingLastPathComponent().appendingPathComponent("postgres.log")
            let text = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
            log = text.split(separator: "\n").filter { $0.contains("ERROR") || $0.contains("logical") }.suffix(8).joined(separator: "\n")
        }
        return "subscription: \(states); log:\n\(log)"
    }

    /// Drops the subscription and its replication slot on the source.
    static func dropSubscription(_ client: PostgresClient, _ name: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: "DROP SUBSCRIPTION IF EXISTS \(name)"), logger: TestCluster.logger)
    }
}

/// A throwaway second PostgreSQL cluster with wal_level = logical, the source of a publication.
struct SourceCluster {
    let cluster: LocalCluster
    let root: URL

    static func start() async throws -> SourceCluster {
        let root = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("pgtrack-source-\(getpid())-\(UUID().uuidString.prefix(8))")
        let port = Int.random(in: 20_000...29_999)
        let cluster = try LocalCluster(root: root, port: port, listenOnLoopback: false, durable: false,
                                       databaseName: "source", logger: TestCluster.logger)
        let source = SourceCluster(cluster: cluster, root: root)
        do {
            try await offCooperativePool { try cluster.start() }
            try await DatabaseProvisioning.createDatabaseIfMissing(cluster.databaseURL, logger: TestCluster.logger)
            _ = try await TestCluster.withClient(cluster.databaseURL) { client in
                try await client.query("ALTER SYSTEM SET wal_level = logical", logger: TestCluster.logger)
            }
            try await offCooperativePool {
                try cluster.stop()
                try cluster.start()
            }
        } catch {
            source.remove()
            throw error
        }
        return source
    }

    /// How the subscriber reaches it: the Unix socket, as postgres (trust).
    var connectionString: String {
        "host=\(cluster.socketDirectory.path) port=\(cluster.port) user=postgres dbname=source"
    }

    func run(_ script: String) async throws {
        try await TestCluster.withClient(cluster.databaseURL) { client in
            try await SyncLogicalReplicationTests.run(client, script)
        }
    }

    func remove() {
        try? cluster.stop()
        try? FileManager.default.removeItem(at: root)
    }
}
