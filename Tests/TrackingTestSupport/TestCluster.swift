import Foundation
import Logging
import PostgresNIO
import TrackingCore
import TrackingStore

/// The PostgreSQL + PostGIS cluster of a test run: started by the first test that needs it, in
/// a fresh temporary directory (as the `postgres` user when running as root), stopped and
/// removed when the test process exits. Each test gets its own database, cloned from a
/// migrated template, so tests run in parallel without seeing each other's rows or NOTIFYs.
public enum TestCluster {
    public static let logger: Logger = {
        var logger = Logger(label: "pgtrack.tests")
        logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }()

    /// The repository checkout (holds Migrations/ and SQL/).
    public static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    public static func schemaFiles() throws -> SchemaFiles {
        try SchemaFiles(root: packageRoot)
    }

    private static let template = "pgtrack_template"
    private static let ready = Task<DatabaseURL, any Error> { try await startAndMigrateTemplate() }

    /// A new, migrated database of its own.
    public static func freshDatabase() async throws -> DatabaseURL {
        let server = try await ready.value
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        let url = server.with(database: String(name))
        try await DatabaseProvisioning.createDatabaseIfMissing(url, template: template, logger: logger)
        return url
    }

    /// A database with nothing in it (no migrations), for migrator tests.
    public static func emptyDatabase() async throws -> DatabaseURL {
        let server = try await ready.value
        let name = "e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        let url = server.with(database: String(name))
        try await DatabaseProvisioning.createDatabaseIfMissing(url, logger: logger)
        return url
    }

    private static func startAndMigrateTemplate() async throws -> DatabaseURL {
        let root = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("pgtrack-test-\(getpid())-\(UUID().uuidString.prefix(8))")
        let cluster = try LocalCluster(root: root, port: 5432, listenOnLoopback: false, durable: false,
                                       maxConnections: 2_500, databaseName: template, logger: logger)
        clusterForCleanup = cluster
        atexit { TestCluster.clusterForCleanup?.discard() }
        try await offCooperativePool { try cluster.start() }
        try await DatabaseProvisioning.createDatabaseIfMissing(cluster.databaseURL, logger: logger)
        let settings = DatabaseConnectionSettings(url: cluster.databaseURL)
        _ = try await Migrator(files: try schemaFiles(), logger: logger).migrate(settings: settings)
        _ = try await withClient(cluster.databaseURL) { client in
            try await TrackingRepository(client: client, logger: logger).ensurePositionPartitions(daysBack: 30, daysAhead: 7)
        }
        try await sealTemplate(cluster.databaseURL)
        return cluster.databaseURL
    }

    /// CREATE DATABASE … TEMPLATE fails while any session is connected to the template. A pool
    /// connection still being opened when the migrating client shut down can outlive it (seen on
    /// a loaded machine: every test of a run failed with "being accessed by other users"), so
    /// the template refuses new connections and any left over is terminated.
    private static func sealTemplate(_ url: DatabaseURL) async throws {
        let connection = try await connect(url.with(database: "postgres"), applicationName: "pgtrack-test-seal")
        do {
            for try await _ in try await connection.query(
                "ALTER DATABASE \(unescaped: template) WITH ALLOW_CONNECTIONS false", logger: logger) {}
            for try await _ in try await connection.query("""
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(template) AND pid <> pg_backend_pid()
                """, logger: logger) {}
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
    }

    nonisolated(unsafe) static var clusterForCleanup: LocalCluster?

    /// A cluster of the caller's own, with one migrated database, for tests that stop and start
    /// PostgreSQL (the shared one serves every other test). The caller discards it.
    public static func privateCluster() async throws -> (cluster: LocalCluster, url: DatabaseURL) {
        let root = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("pgtrack-private-\(getpid())-\(UUID().uuidString.prefix(8))")
        let cluster = try LocalCluster(root: root, port: 5432, listenOnLoopback: false, durable: false,
                                       maxConnections: 100, databaseName: "pgtrack", logger: logger)
        do {
            try await offCooperativePool { try cluster.start() }
            try await DatabaseProvisioning.createDatabaseIfMissing(cluster.databaseURL, logger: logger)
            _ = try await Migrator(files: try schemaFiles(), logger: logger)
                .migrate(settings: DatabaseConnectionSettings(url: cluster.databaseURL))
            _ = try await withClient(cluster.databaseURL) { client in
                try await TrackingRepository(client: client, logger: logger).ensurePositionPartitions(daysBack: 30, daysAhead: 7)
            }
            return (cluster, cluster.databaseURL)
        } catch {
            cluster.discard()
            throw error
        }
    }

    /// Runs `body` with a running PostgresClient on `url`.
    public static func withClient<T: Sendable>(_ url: DatabaseURL, _ body: @Sendable (PostgresClient) async throws -> T) async throws -> T {
        let client = PostgresClient(configuration: try DatabaseConnectionSettings(url: url, maximumConnections: 8).clientConfiguration(),
                                    backgroundLogger: logger.forPostgresPool)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    /// One direct connection (for LISTEN in tests, or pg_terminate_backend).
    public static func connect(_ url: DatabaseURL, applicationName: String = "pgtrack-test") async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            configuration: try DatabaseConnectionSettings(url: url).connectionConfiguration(applicationName: applicationName),
            id: Int.random(in: 1...1_000_000), logger: logger)
    }
}

/// A tenant with one device, created through the repository as the admin command does.
public struct TestTenant: Sendable {
    public let tenant: TenantID
    public let device: DeviceIdentity
    public let apiKey: String

    public static func create(_ repository: TrackingRepository, id: String = "acme", deviceName: String = "van-1") async throws -> TestTenant {
        let tenant = TenantID(id)!
        try await repository.createTenant(id: tenant, name: id.capitalized)
        let (device, key) = try await repository.createDevice(tenant: tenant, name: deviceName, group: "default", grade: 0)
        return TestTenant(tenant: tenant, device: device, apiKey: key)
    }
}

public extension Date {
    /// ISO-8601 with milliseconds, as devices send.
    var iso8601: String { formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)) }
}
