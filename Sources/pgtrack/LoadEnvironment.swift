import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import TrackingLoad
import TrackingStore

/// Where simulate and bench run: a --target server, or a `pgtrack serve` child this command
/// starts; and the database behind it (DATABASE_URL or the local cluster) for provisioning.
struct LoadEnvironment: Sendable {
    let baseURL: String
    let serverPID: Int32?
    let settings: DatabaseConnectionSettings
    let logger: Logger

    func withRepository<T: Sendable>(_ body: @Sendable (TrackingRepository) async throws -> T) async throws -> T {
        try await withPostgresClient(settings, logger: logger) { client in
            try await body(TrackingRepository(client: client, logger: logger))
        }
    }

    static func with<T: Sendable>(target: String?, serverPID: Int32?, port: Int, database: DatabaseOptions, logger: Logger,
                                  progress: @escaping @Sendable (String) -> Void,
                                  _ body: @Sendable (LoadEnvironment) async throws -> T) async throws -> T {
        let (settings, startedCluster) = try await database.resolve(logger: logger)
        var server: ServerProcess?
        do {
            let environment: LoadEnvironment
            if let target {
                environment = LoadEnvironment(baseURL: target.hasSuffix("/") ? String(target.dropLast()) : target,
                                              serverPID: serverPID, settings: settings, logger: logger)
            } else {
                var arguments: [String] = []
                if let dir = database.schemaDir { arguments += ["--schema-dir", dir] }
                if database.databaseURLFromEnvironment == nil {
                    arguments += ["--data-dir", database.dataDirectory.path, "--local-port", "\(database.localPort)"]
                }
                // Logins need a signing secret; a throwaway one unless the caller set JWT_SECRET.
                let secret = ProcessInfo.processInfo.environment["JWT_SECRET"] ?? UUID().uuidString + UUID().uuidString
                let child = try ServerProcess(port: port, extraArguments: arguments, environment: ["JWT_SECRET": secret])
                server = child
                try await LoadHTTP.withClient(connections: 2) { http in try await child.waitUntilReady(http: http) }
                progress("started pgtrack serve (pid \(child.pid)) on \(child.baseURL)")
                environment = LoadEnvironment(baseURL: child.baseURL, serverPID: child.pid, settings: settings, logger: logger)
            }
            let result = try await body(environment)
            await server?.stop()
            try? startedCluster?.stop()
            return result
        } catch {
            if let server { progress("server log:\n\(server.logTail())") }
            await server?.stop()
            try? startedCluster?.stop()
            throw error
        }
    }
}

enum LoadJSON {
    static func line(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}

enum SimulationText {
    static func render(_ r: SimulationReport) -> String {
        func mb(_ bytes: Int?) -> String { bytes.map { String(format: "%.1f MB", Double($0) / 1_048_576) } ?? "n/a" }
        func pct(_ value: Double?) -> String { value.map { String(format: "%.1f %%", $0) } ?? "n/a" }
        let res = r.server.resources
        return """
            scenario \(r.plan.scenario): \(r.plan.drivers) drivers / \(r.plan.tenants) tenants at \(r.plan.rateHz) Hz, \(r.viewers) viewers (\(r.sseViewers) SSE, \(r.wsViewers) WebSocket), \(r.bookedDrivers) drivers on bookings, \(r.elapsedSeconds) s against \(r.target)
            ingest:    \(r.ingest.requests) requests, \(r.ingest.errors) errors, \(r.ingest.skippedTicks) ticks skipped while behind, \(r.ingest.requestsPerSecond) req/s, \(r.ingest.positionsPerSecond) positions/s; latency \(r.ingest.latencyMs)
            delivery:  \(r.delivery.events) events, \(r.delivery.eventsPerSecond) events/s; lost \(r.delivery.lost) of \(r.delivery.expected), duplicated \(r.delivery.duplicated), out of order \(r.delivery.outOfOrder), resets \(r.delivery.resets), failed streams \(r.delivery.streamFailures)
            end-to-end: \(r.delivery.latencyMs)
                  SSE: \(r.delivery.sseLatencyMs)
            WebSocket: \(r.delivery.wsLatencyMs)
            server:    RSS \(mb(r.server.rssBytesBeforeViewers)) before viewers, \(mb(r.server.rssBytesWithViewers)) with them (\(r.server.bytesPerConnection.map { "\($0 / 1_024) KB" } ?? "n/a") per connection), \(mb(r.server.rssBytesAtEnd)) at the end; CPU \(pct(res.serverCPUPercent)) of one core
            machine:   \(res.cores) cores, \(pct(res.machineCPUPercent)) busy; this simulator used \(pct(res.clientCPUPercent)) of one core
            """
    }
}
