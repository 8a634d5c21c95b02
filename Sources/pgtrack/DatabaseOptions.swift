import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import TrackingCore
import TrackingStore

/// Where the database is: `DATABASE_URL`, or pgtrack's own local cluster.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "Directory of the local PostgreSQL cluster used when DATABASE_URL is unset (default: $PGTRACK_DATA_DIR or ./.pgtrack).")
    var dataDir: String?

    @Option(help: "Port of the local cluster (loopback only).")
    var localPort: Int = 54329

    @Option(help: "Directory holding Migrations/ and SQL/ (default: $PGTRACK_HOME, the working directory, or beside the executable).")
    var schemaDir: String?

    var databaseURLFromEnvironment: String? {
        ProcessInfo.processInfo.environment["DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The local data directory: the cluster lives here, and the generated JWT secret.
    var dataDirectory: URL {
        let path = dataDir ?? ProcessInfo.processInfo.environment["PGTRACK_DATA_DIR"] ?? ".pgtrack"
        return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).absoluteURL
    }

    func localCluster(logger: Logger) throws -> LocalCluster {
        try LocalCluster(root: dataDirectory, port: localPort, logger: logger)
    }

    /// The database to use. With no DATABASE_URL the local cluster is started (created on first
    /// use) and its `pgtrack` database created; `startedCluster` says whether we started it.
    func resolve(logger: Logger) async throws -> (settings: DatabaseConnectionSettings, startedCluster: LocalCluster?) {
        if let text = databaseURLFromEnvironment {
            do {
                return (DatabaseConnectionSettings(url: try DatabaseURL(parsing: text)), nil)
            } catch {
                throw ValidationError(error.description)
            }
        }
        let cluster = try localCluster(logger: logger)
        let started = try cluster.start()
        try await DatabaseProvisioning.createDatabaseIfMissing(cluster.databaseURL, logger: logger)
        logger.info("using the local PostgreSQL cluster; connect with: \(cluster.psqlHint)")
        return (DatabaseConnectionSettings(url: cluster.databaseURL), started ? cluster : nil)
    }
}

/// Runs `body` with a running PostgresClient, then shuts the client down.
func withPostgresClient<T: Sendable>(
    _ settings: DatabaseConnectionSettings, logger: Logger, _ body: @Sendable (PostgresClient) async throws -> T
) async throws -> T {
    let client = PostgresClient(configuration: try settings.clientConfiguration(), backgroundLogger: logger.forPostgresPool)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        return try await body(client)
    }
}
