import ArgumentParser
import Foundation
import Hummingbird
import Logging
import TrackingServer
import TrackingStore

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the HTTP server (migrates first). Without DATABASE_URL it runs its own PostgreSQL in ./.pgtrack.")

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port to bind.") var port = 8080
    @Option(help: "Days of history accepted before today (position partitions kept).") var partitionDaysBack = 30
    @Option(help: "Days of position partitions created ahead of today.") var partitionDaysAhead = 7
    @Option(help: "Seconds a fix may be ahead of the server clock.") var maxFutureSkew: Double = 300
    @Option(help: "Events buffered per stream client before it gets a reset.") var clientBuffer = 2_048
    @Option(help: "Lifetime of access tokens (JWT), in seconds.") var accessTokenSeconds = 900
    @Option(help: "Lifetime of refresh tokens, in days.") var refreshTokenDays = 30
    @Option(help: "Push at most one update per device per this many seconds, always the newest (e.g. 1); 0 pushes every update. Every fix is stored either way.")
    var minBroadcastInterval: Double = 0
    @Option(help: "Seconds between WebSocket pings; a socket that misses a pong is closed.") var wsPingSeconds = 30
    @Option(help: "Seconds a WebSocket may stay in no room before it is closed.") var wsIdleSeconds = 60
    @Option(help: "Seconds between cdc_lag events in each tenant's admin room.") var cdcLagSeconds: Double = 5
    @Option(help: "Seconds between maintenance passes (rollups, partitions ahead, retention; one node at a time).")
    var maintenanceSeconds: Double = 60
    @Option(help: "Seconds a request may run before it is answered 503 (a ceiling on work in flight).") var requestTimeoutSeconds: Double = 30
    @Option(help: "Requests worked on at once; more are answered 503 with Retry-After.") var maxInFlight = 1_024
    @Option(help: "Seconds an SSE client that overflowed its buffer may take to read its reset before it is disconnected.")
    var slowConsumerGraceSeconds: Double = 60
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1–65535") }
        guard (1...3_650).contains(partitionDaysBack), (1...366).contains(partitionDaysAhead) else {
            throw ValidationError("--partition-days-back must be 1–3650 and --partition-days-ahead 1–366")
        }
        guard maxFutureSkew >= 0, clientBuffer >= 16 else { throw ValidationError("--max-future-skew must be >= 0 and --client-buffer >= 16") }
        guard (30...86_400).contains(accessTokenSeconds), (1...365).contains(refreshTokenDays) else {
            throw ValidationError("--access-token-seconds must be 30–86400 and --refresh-token-days 1–365")
        }
        guard minBroadcastInterval.isFinite, (0...3_600).contains(minBroadcastInterval) else {
            throw ValidationError("--min-broadcast-interval must be 0–3600 seconds")
        }
        guard (1...3_600).contains(wsPingSeconds), (1...86_400).contains(wsIdleSeconds) else {
            throw ValidationError("--ws-ping-seconds must be 1–3600 and --ws-idle-seconds 1–86400")
        }
        guard cdcLagSeconds.isFinite, (0.1...3_600).contains(cdcLagSeconds) else {
            throw ValidationError("--cdc-lag-seconds must be 0.1–3600")
        }
        guard maintenanceSeconds.isFinite, (1...86_400).contains(maintenanceSeconds) else {
            throw ValidationError("--maintenance-seconds must be 1–86400")
        }
        guard requestTimeoutSeconds.isFinite, (1...3_600).contains(requestTimeoutSeconds), (1...1_000_000).contains(maxInFlight) else {
            throw ValidationError("--request-timeout-seconds must be 1–3600 and --max-in-flight 1–1000000")
        }
        guard slowConsumerGraceSeconds.isFinite, (1...3_600).contains(slowConsumerGraceSeconds) else {
            throw ValidationError("--slow-consumer-grace-seconds must be 1–3600")
        }
    }

    func run() async throws {
        Pgtrack.bootstrapLogging()
        let logger = Logger(label: "pgtrack")
        let files = try SchemaFiles.locate(explicit: database.schemaDir)
        let secret: (secret: String, source: String)
        do {
            secret = try JWTSecret.resolve(environment: ProcessInfo.processInfo.environment["JWT_SECRET"],
                                           file: database.dataDirectory.appendingPathComponent("jwt_secret"))
        } catch {
            throw ValidationError("\(error)")
        }
        logger.info("access tokens signed with the secret from \(secret.source)")
        let (settings, startedCluster) = try await database.resolve(logger: logger)
        do {
            let report = try await Migrator(files: files, logger: logger).migrate(settings: settings)
            logger.info("schema up to date", metadata: ["applied": "\(report.applied.count)", "definitions": "\(report.definitions)"])
            var configuration = ServerConfiguration(
                host: host, port: port, partitionDaysBack: partitionDaysBack, partitionDaysAhead: partitionDaysAhead,
                maxFutureSkewSeconds: maxFutureSkew, clientBufferSize: clientBuffer, jwtSecret: secret.secret,
                accessTokenSeconds: accessTokenSeconds, refreshTokenDays: refreshTokenDays,
                minBroadcastInterval: minBroadcastInterval > 0 ? .milliseconds(Int64(minBroadcastInterval * 1_000)) : nil,
                webSocketPingSeconds: wsPingSeconds, webSocketIdleSeconds: wsIdleSeconds,
                cdcLagInterval: .milliseconds(Int64(cdcLagSeconds * 1_000)),
                maintenanceInterval: .milliseconds(Int64(maintenanceSeconds * 1_000)))
            configuration.databaseGate.requestCeiling = .milliseconds(Int64(requestTimeoutSeconds * 1_000))
            configuration.databaseGate.maxInFlight = maxInFlight
            configuration.slowConsumerGrace = .milliseconds(Int64(slowConsumerGraceSeconds * 1_000))
            let (app, _) = try await buildApplication(configuration: configuration, database: settings, logger: logger)
            try await app.runService()  // SIGINT/SIGTERM shut down gracefully: streams close, then services stop
        } catch {
            try? startedCluster?.stop()
            throw error
        }
        try startedCluster?.stop()
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending Migrations/ in order (each once, checksummed) and re-apply SQL/.")

    @Option(help: "Days of position partitions to create before today.") var partitionDaysBack = 30
    @Option(help: "Days of position partitions to create ahead of today.") var partitionDaysAhead = 7
    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        Pgtrack.bootstrapLogging()
        let logger = Logger(label: "pgtrack")
        let files = try SchemaFiles.locate(explicit: database.schemaDir)
        let (settings, startedCluster) = try await database.resolve(logger: logger)
        defer { try? startedCluster?.stop() }
        let report = try await Migrator(files: files, logger: logger).migrate(settings: settings)
        let created = try await withPostgresClient(settings, logger: logger) { client in
            try await TrackingRepository(client: client, logger: logger)
                .ensurePositionPartitions(daysBack: partitionDaysBack, daysAhead: partitionDaysAhead)
        }
        print(#"{"applied":[\#(report.applied.map { "\"\($0)\"" }.joined(separator: ","))],"already_applied":\#(report.alreadyApplied),"definitions":\#(report.definitions),"definitions_unchanged":\#(report.definitionsUnchanged),"partitions_created":\#(created)}"#)
    }
}
