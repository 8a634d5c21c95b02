import ArgumentParser
import Foundation
import Logging
import TrackingLoad
import TrackingStore

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks pgtrack against raw PostgreSQL on the same machine, in the same run.",
        discussion: """
            ingest: POST /api/v1/locations (single fixes, then --batch-size arrays) against the same INSERTs sent straight \
            to PostgreSQL through the same triggers, --workers at a time. latency: POST → SSE beside INSERT → NOTIFY → LISTEN \
            at --latency-rate. fanout: rows inserted into PostgreSQL reach --fanout-clients SSE clients and one raw LISTEN \
            client. snapshot: a gzip snapshot of --snapshot-devices latest positions. idle: server RSS per open SSE \
            connection at each --idle-connections count; it runs first, while the server is fresh. Without --target a `pgtrack serve` child is started.
            """)

    @Option(help: "Concurrent writers in the ingest phase.") var workers = 16
    @Option(help: "Tenants the ingest writers are spread over.") var tenants = 4
    @Option(help: "Seconds per measurement.") var duration: Double = 5
    @Option(help: "Fixes per request in the batched ingest.") var batchSize = 100
    @Option(help: "Fixes per second in the latency phase.") var latencyRate: Double = 200
    @Option(help: "SSE clients in the fan-out phase.") var fanoutClients = 100
    @Option(help: "Events per second inserted in the fan-out phase.") var fanoutRate: Double = 2_000
    @Option(help: "Latest positions in the snapshot phase.") var snapshotDevices = 10_000
    @Option(help: "Comma-separated counts of idle SSE connections.") var idleConnections = "1000,10000"
    @Option(help: "Comma-separated phases: \(BenchPlan.allPhases.joined(separator: ","))") var phases = BenchPlan.allPhases.joined(separator: ",")
    @Option(help: "Base URL of a running server; without it a server is started.") var target: String?
    @Option(help: "PID of the --target server, to report its RSS and CPU.") var serverPid: Int32?
    @Option(help: "Port of the server started when there is no --target.") var port = 18_081
    @Flag(help: "Print the report as one line of JSON.") var json = false
    @OptionGroup var database: DatabaseOptions

    func plan() throws -> BenchPlan {
        var plan = BenchPlan()
        guard (1...1_024).contains(workers), (1...100).contains(tenants), tenants <= workers else {
            throw ValidationError("--workers must be 1–1024 and --tenants 1–100 (at most --workers)")
        }
        guard duration > 0, duration <= 3_600 else { throw ValidationError("--duration must be 0–3600 s") }
        guard (2...1_000).contains(batchSize) else { throw ValidationError("--batch-size must be 2–1000") }
        guard latencyRate > 0, latencyRate <= 100_000, fanoutRate >= 10, fanoutRate <= 1_000_000 else {
            throw ValidationError("--latency-rate must be > 0 and --fanout-rate ≥ 10")
        }
        guard (1...20_000).contains(fanoutClients), (1...1_000_000).contains(snapshotDevices) else {
            throw ValidationError("--fanout-clients must be 1–20000 and --snapshot-devices 1–1000000")
        }
        let counts = idleConnections.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty, counts.allSatisfy({ (1...100_000).contains($0) }) else {
            throw ValidationError("--idle-connections must be comma-separated counts of 1–100000")
        }
        let chosen = phases.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !chosen.isEmpty, chosen.allSatisfy(BenchPlan.allPhases.contains) else {
            throw ValidationError("--phases must name some of \(BenchPlan.allPhases.joined(separator: ","))")
        }
        plan.workers = workers
        plan.tenants = tenants
        plan.durationSeconds = duration
        plan.batchSize = batchSize
        plan.latencyRate = latencyRate
        plan.fanoutClients = fanoutClients
        plan.fanoutRate = fanoutRate
        plan.snapshotDevices = snapshotDevices
        plan.idleConnections = counts
        plan.phases = chosen
        return plan
    }

    func validate() throws {
        _ = try plan()
        guard (1...65_535).contains(port) else { throw ValidationError("--port must be 1–65535") }
        if let target {
            do { _ = try LoadHTTP.hostAndPort(target) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() async throws {
        Pgtrack.bootstrapLogging()
        let logger = Logger(label: "pgtrack.bench")
        let plan = try plan()
        let limit = ProcessStats.raiseOpenFileLimit(to: UInt64(max(65_536, (plan.idleConnections.max() ?? 0) * 3)))
        let progress: @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
        progress("bench: phases \(plan.phases.joined(separator: ",")), \(plan.durationSeconds) s each; open files limit \(limit)")
        let report = try await LoadEnvironment.with(target: target, serverPID: serverPid, port: port, database: database, logger: logger,
                                                    progress: progress) { environment in
            try await TrackingLoad.Bench(plan: plan, baseURL: environment.baseURL, serverPID: environment.serverPID,
                                         settings: environment.settings, logger: logger, progress: progress).run()
        }
        print(json ? try LoadJSON.line(report) : BenchText.render(report))
    }
}

enum BenchText {
    static func render(_ r: BenchReport) -> String {
        var lines: [String] = []
        for pair in r.ingest {
            lines.append(String(format: "ingest, %d fix/request, %d writers: pgtrack %.0f positions/s, raw INSERT %.0f positions/s, ratio %.3f (pgtrack request %@; raw statement %@)",
                                pair.fixesPerRequest, r.plan.workers, pair.pgtrackPositionsPerSecond, pair.rawPositionsPerSecond, pair.ratio,
                                pair.pgtrackLatencyMs.description, pair.rawLatencyMs.description))
        }
        if let l = r.latency {
            lines.append("latency at \(l.ratePerSecond) fixes/s each, run together: raw INSERT→LISTEN \(l.rawMs); pgtrack POST→SSE \(l.pgtrackMs); p99 ratio \(l.p99Ratio); lost \(l.lost), duplicated \(l.duplicated)")
        }
        if let f = r.fanout {
            lines.append(String(format: "fan-out to %d SSE clients: %.0f messages/s; raw LISTEN %.0f events/s; per-client ratio %.3f; added latency p50 %.2f ms, p99 %.2f ms (raw %@; SSE %@); lost %lld, duplicated %d, resets %d",
                                f.clients, f.sseMessagesPerSecond, f.rawEventsPerSecond, f.perClientRatio, f.addedP50Ms, f.addedP99Ms,
                                f.rawLatencyMs.description, f.sseLatencyMs.description, f.lost, f.duplicated, f.resets))
        }
        if let s = r.snapshot {
            lines.append(String(format: "snapshot of %d positions: %d bytes gzip (%d identity), median %.1f ms, min %.1f ms (identity median %.1f ms)",
                                s.positions, s.gzipBytes, s.identityBytes, s.medianMs, s.minMs, s.identityMedianMs))
        }
        for idle in r.idle {
            lines.append("idle SSE: \(idle.opened)/\(idle.connections) connections, server RSS \(idle.rssBytesBefore.map { "\($0 / 1_024) KB" } ?? "n/a") → \(idle.rssBytesAfter.map { "\($0 / 1_024) KB" } ?? "n/a"), \(idle.bytesPerConnection.map { "\($0) bytes" } ?? "n/a") per connection")
        }
        if let res = r.resources {
            lines.append("server CPU \(res.serverCPUPercent.map { "\($0) %" } ?? "n/a") of one core, machine \(res.machineCPUPercent.map { "\($0) %" } ?? "n/a") of \(res.cores) cores, bench client \(res.clientCPUPercent.map { "\($0) %" } ?? "n/a")")
        }
        return lines.joined(separator: "\n")
    }
}
