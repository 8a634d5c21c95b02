import ArgumentParser
import Logging
import TrackingStore

struct Database: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Manage the local PostgreSQL cluster (./.pgtrack).",
        subcommands: [Start.self, Stop.self, Status.self])

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create (first time) and start the local cluster.")
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            Pgtrack.bootstrapLogging()
            let logger = Logger(label: "pgtrack")
            let cluster = try database.localCluster(logger: logger)
            let started = try cluster.start()
            try await DatabaseProvisioning.createDatabaseIfMissing(cluster.databaseURL, logger: logger)
            print(started ? "started; connect with: \(cluster.psqlHint)" : "already running; connect with: \(cluster.psqlHint)")
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the local cluster.")
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let cluster = try database.localCluster(logger: Logger(label: "pgtrack"))
            try cluster.stop()
            print("stopped")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show whether the local cluster is running (exit 3 when not).")
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let cluster = try database.localCluster(logger: Logger(label: "pgtrack"))
            switch try cluster.status() {
            case .running(let pid):
                print("running (pid \(pid.map(String.init) ?? "?"), data \(cluster.dataDirectory.path)); connect with: \(cluster.psqlHint)")
            case .stopped:
                print("stopped (data \(cluster.dataDirectory.path))")
                throw ExitCode(3)
            case .notInitialized:
                print("not initialized (no cluster in \(cluster.root.path)); `pgtrack db start` creates it")
                throw ExitCode(3)
            }
        }
    }
}

