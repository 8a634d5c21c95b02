import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization
import TrackingCore
import TrackingStore

public struct BenchPlan: Codable, Sendable {
    public var workers = 16
    public var tenants = 4
    public var durationSeconds = 5.0
    public var batchSize = 100
    public var latencyRate = 200.0
    public var fanoutClients = 100
    public var fanoutRate = 2_000.0
    public var snapshotDevices = 10_000
    public var idleConnections = [1_000, 10_000]
    public var phases = BenchPlan.allPhases

    public static let allPhases = ["ingest", "latency", "fanout", "snapshot", "idle"]
    public init() {}
}

public struct BenchReport: Codable, Sendable {
    public struct IngestPair: Codable, Sendable {
        public var fixesPerRequest: Int
        public var pgtrackPositionsPerSecond: Double
        public var rawPositionsPerSecond: Double
        public var ratio: Double
        public var pgtrackErrors: Int
        public var pgtrackLatencyMs: LatencySummary
        public var rawLatencyMs: LatencySummary
    }

    public struct Latency: Codable, Sendable {
        public var ratePerSecond: Double
        public var rawMs: LatencySummary
        public var pgtrackMs: LatencySummary
        public var p99Ratio: Double
        public var lost: Int64
        public var duplicated: Int
    }

    public struct FanOut: Codable, Sendable {
        public var clients: Int
        public var eventsPosted: Int
        public var rawEventsPerSecond: Double
        public var sseMessagesPerSecond: Double
        public var perClientRatio: Double
        public var rawLatencyMs: LatencySummary
        public var sseLatencyMs: LatencySummary
        public var addedP50Ms: Double
        public var addedP99Ms: Double
        public var lost: Int64
        public var duplicated: Int
        public var resets: Int
    }

    public struct SnapshotTiming: Codable, Sendable {
        public var devices: Int
        public var positions: Int
        public var gzipBytes: Int
        public var identityBytes: Int
        public var medianMs: Double
        public var minMs: Double
        public var identityMedianMs: Double
    }

    public struct Idle: Codable, Sendable {
        public var connections: Int
        public var opened: Int
        public var rssBytesBefore: Int?
        public var rssBytesAfter: Int?
        public var bytesPerConnection: Int?
    }

    public var plan: BenchPlan
    public var target: String
    public var ingest: [IngestPair] = []
    public var latency: Latency?
    public var fanout: FanOut?
    public var snapshot: SnapshotTiming?
    public var idle: [Idle] = []
    public var resources: ResourceUse?
}

/// `pgtrack bench`: each pgtrack figure beside the same work done straight on PostgreSQL, in
/// the same run on the same machine.
public struct Bench: Sendable {
    public let plan: BenchPlan
    public let baseURL: String
    public let serverPID: Int32?
    public let settings: DatabaseConnectionSettings
    public let logger: Logger
    public let progress: @Sendable (String) -> Void

    public init(plan: BenchPlan, baseURL: String, serverPID: Int32?, settings: DatabaseConnectionSettings, logger: Logger,
                progress: @escaping @Sendable (String) -> Void) {
        self.plan = plan
        self.baseURL = baseURL
        self.serverPID = serverPID
        self.settings = settings
        self.logger = logger
        self.progress = progress
    }

    public func run() async throws -> BenchReport {
        var pool = settings
        pool.maximumConnections = max(plan.workers + 4, 8)
        pool.applicationName = "pgtrack-bench"
        let client = PostgresClient(configuration: try pool.clientConfiguration(), backgroundLogger: logger.forPostgresPool)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await run(client: client)
        }
    }

    private func run(client: PostgresClient) async throws -> BenchReport {
        try await LoadHTTP.withClient(connections: max(plan.workers, 4) + 8) { http in
            try await run(client: client, http: http)
        }
    }

    private func run(client: PostgresClient, http: HTTPClient) async throws -> BenchReport {
        let repository = TrackingRepository(client: client, logger: logger)
        let baseline = BenchmarkBaseline(client: client, logger: logger)
        let tag = Fleet.makeTag()
        let password = "bench-\(Fleet.makeTag())-\(Fleet.makeTag())"
        var fleet = try await Fleet.provision(repository: repository, tag: "b\(tag)", tenantCount: plan.tenants,
                                              driverCount: max(plan.workers, plan.tenants), password: password)
        try await fleet.logIn(baseURL: baseURL, http: http, password: password)
        var report = BenchReport(plan: plan, target: baseURL)
        let window = ResourceWindow(serverPID: serverPID)

        // First, while the server is fresh: memory that later phases free would be reused by
        // the idle streams and make them look cheaper than they are.
        if plan.phases.contains("idle") {
            report.idle = try await idle(repository: repository, http: http, tag: tag)
        }
        if plan.phases.contains("ingest") {
            for size in [1, plan.batchSize] {
                let raw = try await ingestRaw(fleet: fleet, baseline: baseline, fixesPerRequest: size)
                let served = try await ingestHTTP(fleet: fleet, http: http, fixesPerRequest: size)
                let pair = BenchReport.IngestPair(
                    fixesPerRequest: size, pgtrackPositionsPerSecond: served.rate, rawPositionsPerSecond: raw.rate,
                    ratio: ratio(served.rate, raw.rate), pgtrackErrors: served.errors,
                    pgtrackLatencyMs: served.latency, rawLatencyMs: raw.latency)
                progress(String(format: "ingest %3d fix/request: pgtrack %.0f positions/s, raw INSERT %.0f positions/s, ratio %.2f",
                                size, served.rate, raw.rate, pair.ratio))
                report.ingest.append(pair)
            }
        }
        if plan.phases.contains("latency") {
            report.latency = try await latency(fleet: fleet, baseline: baseline, http: http)
        }
        if plan.phases.contains("fanout") {
            report.fanout = try await fanOut(fleet: fleet, baseline: baseline)
        }
        if plan.phases.contains("snapshot") {
            report.snapshot = try await snapshot(repository: repository, baseline: baseline, http: http, tag: tag)
        }
        report.resources = window.finish()
        return report
    }

    private func ratio(_ a: Double, _ b: Double) -> Double { b > 0 ? (a / b * 1_000).rounded() / 1_000 : 0 }
    private var duration: Duration { .milliseconds(Int64(plan.durationSeconds * 1_000)) }

    // MARK: Ingest

    struct Throughput {
        var rate: Double
        var errors: Int
        var latency: LatencySummary
    }

    /// `workers` loops, each on its own device (spread over the tenants), as fast as they go.
    private func closedLoop(_ fleet: Fleet, _ operation: @escaping @Sendable (Fleet.Driver, Int) async throws -> Bool,
                            fixesPerRequest: Int) async throws -> Throughput {
        let latency = LatencyRecorder()
        let tally = LoadCounters()
        let start = ContinuousClock.now
        let end = start + duration
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<plan.workers {
                let driver = fleet.drivers[worker % fleet.drivers.count]
                group.addTask {
                    var n = 0
                    while ContinuousClock.now < end {
                        n += 1
                        let began = ContinuousClock.now
                        if try await operation(driver, n) {
                            tally.positions.add(fixesPerRequest, ordering: .relaxed)
                            latency.record(microseconds: (ContinuousClock.now - began).microseconds)
                        } else {
                            tally.postErrors.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let seconds = (ContinuousClock.now - start).secondsDouble
        return Throughput(rate: (Double(tally.positions.load(ordering: .relaxed)) / seconds).rounded(), errors: tally.postErrors.load(ordering: .relaxed),
                          latency: latency.summary)
    }

    static func rowsJSON(count: Int, device: Int, first n: Int) -> String {
        let now = wallMicros()
        var text = "["
        for i in 0..<count {
            if i > 0 { text += "," }
            let t = Double(now - Int64(count - i) * 1_000) / 1e6
            text += #"{"lat":52.52\#(i % 10),"lon":13.40\#(i % 7),"t":\#(t),"speed":8.5,"heading":90,"attributes":{"sim_d":\#(device),"sim_n":\#(n + i),"sim_us":\#(now)}}"#
        }
        return text + "]"
    }

    static func fixesJSON(count: Int, device: Int, first n: Int, booking: String? = nil) -> String {
        let now = wallMicros()
        var parts: [String] = []
        parts.reserveCapacity(count)
        for i in 0..<count {
            let t = isoTimestamp(micros: now - Int64(count - i) * 1_000)
            parts.append(#"{"latitude":52.52\#(i % 10),"longitude":13.40\#(i % 7),"timestamp":"\#(t)","speed":8.5,"heading":90,"attributes":{"sim_d":\#(device),"sim_n":\#(n + i),"sim_us":\#(now)}}"#)
        }
        return count == 1 ? parts[0] : "[" + parts.joined(separator: ",") + "]"
    }

    private func ingestRaw(fleet: Fleet, baseline: BenchmarkBaseline, fixesPerRequest size: Int) async throws -> Throughput {
        try await closedLoop(fleet, { driver, n in
            if size == 1 {
                let now = wallMicros()
                try await baseline.insertOne(tenant: driver.tenant, device: driver.deviceID, latitude: 52.52, longitude: 13.405,
                                             fixTime: Date(timeIntervalSince1970: Double(now) / 1e6), speed: 8.5, heading: 90,
                                             attributesJSON: #"{"sim_d":\#(driver.index),"sim_n":\#(n),"sim_us":\#(now)}"#)
            } else {
                try await baseline.insertBatch(tenant: driver.tenant, device: driver.deviceID,
                                               rowsJSON: Bench.rowsJSON(count: size, device: driver.index, first: n * size))
            }
            return true
        }, fixesPerRequest: size)
    }

    private func ingestHTTP(fleet: Fleet, http: HTTPClient, fixesPerRequest size: Int) async throws -> Throughput {
        let url = baseURL + "/api/v1/locations"
        return try await closedLoop(fleet, { driver, n in
            let body = Bench.fixesJSON(count: size, device: driver.index, first: n * size)
            let (status, _) = try await LoadHTTP.sendRaw(http, "POST", url, body: ByteBuffer(string: body), headers: ["X-API-Key": driver.apiKey])
            return status == 202
        }, fixesPerRequest: size)
    }

    // MARK: Latency

    /// Open loop at `latencyRate` fixes/s each, at the same time so both see the same machine:
    /// raw INSERTs (tenant 1's devices, measured by a LISTEN client on its channel) and
    /// POSTs (tenant 0's devices, measured by an SSE client of its tenant stream).
    private func latency(fleet: Fleet, baseline: BenchmarkBaseline, http: HTTPClient) async throws -> BenchReport.Latency {
        let tenant = fleet.tenants[0]
        let rawTenant = fleet.tenants.count > 1 ? fleet.tenants[1] : tenant
        let devices = tenant.drivers.map { fleet.drivers[$0] }
        let rawDevices = rawTenant.drivers.map { fleet.drivers[$0] }
        let interval = Duration.seconds(1) / plan.latencyRate
        // Raw fixes carry `raw_us`, not the simulator's attributes: the SSE client ignores them
        // and the LISTEN client counts only them, even when both share one tenant.
        let raw = RawListener(timeAttribute: "raw_us")
        try await raw.start(settings: settings, channel: BusTopic.tenant(TenantID(rawTenant.id)!).channel, logger: logger)
        let counters = LoadCounters()
        let sseLatency = LatencyRecorder()
        let viewer = Viewer(stream: .tenant(tenant.id), transport: .sse, devices: tenant.drivers, deviceCount: fleet.drivers.count,
                            token: tenant.token, latency: sseLatency, counters: counters)
        let url = baseURL + "/api/v1/locations"
        let (accepted, tally) = try await watching([viewer]) {
            async let rawRun = openLoop(interval: interval, devices: rawDevices) { driver, n in
                let now = wallMicros()
                try await baseline.insertOne(tenant: driver.tenant, device: driver.deviceID, latitude: 52.52, longitude: 13.405,
                                             fixTime: Date(timeIntervalSince1970: Double(now) / 1e6), speed: 8.5, heading: 90,
                                             attributesJSON: #"{"raw_n":\#(n),"raw_us":\#(now)}"#)
                return true
            }
            let served = try await openLoop(interval: interval, devices: devices) { driver, n in
                let body = Bench.fixesJSON(count: 1, device: driver.index, first: n)
                let (status, _) = try await LoadHTTP.sendRaw(http, "POST", url, body: ByteBuffer(string: body), headers: ["X-API-Key": driver.apiKey])
                return status == 202
            }
            _ = try await rawRun
            return served
        }
        try await Task.sleep(for: .milliseconds(300))
        await raw.stop()
        let result = BenchReport.Latency(
            ratePerSecond: plan.latencyRate, rawMs: raw.latency.summary, pgtrackMs: sseLatency.summary,
            p99Ratio: ratio(sseLatency.summary.p99, raw.latency.summary.p99),
            lost: tally.reduce(0) { $0 + $1.lost(accepted: accepted) }, duplicated: tally.reduce(0) { $0 + $1.duplicates })
        progress("latency at \(plan.latencyRate)/s each, run together: raw INSERT→LISTEN \(result.rawMs); pgtrack POST→SSE \(result.pgtrackMs); p99 ratio \(result.p99Ratio)")
        return result
    }

    /// Runs `operation` for each device in turn at a fixed total rate; returns accepted counts per device index.
    private func openLoop(interval: Duration, devices: [Fleet.Driver],
                          _ operation: @escaping @Sendable (Fleet.Driver, Int) async throws -> Bool) async throws -> [Int: Int64] {
        let start = ContinuousClock.now
        let end = start + duration
        let perDevice = interval * devices.count
        return try await withThrowingTaskGroup(of: (Int, Int64).self) { group in
            for (slot, driver) in devices.enumerated() {
                group.addTask {
                    var next = start + interval * slot
                    var n = 0
                    var accepted: Int64 = 0
                    while next < end {
                        try await Task.sleep(until: next, clock: .continuous)
                        next += perDevice
                        n += 1
                        if try await operation(driver, n) { accepted += 1 }
                    }
                    return (driver.index, accepted)
                }
            }
            var result: [Int: Int64] = [:]
            for try await (index, count) in group { result[index] = count }
            return result
        }
    }

    /// Opens the viewers, runs `produce` (which returns accepted fixes per device index), waits
    /// for the viewers to catch up (≤ 10 s), closes them and returns their tallies.
    private func watching(_ viewers: [Viewer],
                          _ produce: () async throws -> [Int: Int64]) async throws -> ([Int64], [StreamTally]) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for viewer in viewers { group.addTask { await viewer.run(baseURL: baseURL) } }
            defer { group.cancelAll() }
            let deadline = ContinuousClock.now + .seconds(60)
            while viewers.contains(where: { !$0.opened }) {
                guard ContinuousClock.now < deadline else { throw LoadError.server("streams did not open within 60 s") }
                if let failure = viewers.lazy.compactMap({ $0.tally.withLock { $0.failure } }).first { throw LoadError.refused(failure) }
                try await Task.sleep(for: .milliseconds(20))
            }
            let counts = try await produce()
            let size = viewers.first?.tally.withLock { $0.received.count } ?? 0
            var accepted = [Int64](repeating: 0, count: size)
            for (index, count) in counts where index < size { accepted[index] = count }
            let drain = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < drain, viewers.contains(where: { v in v.tally.withLock { !$0.caughtUp(accepted: accepted) } }) {
                try await Task.sleep(for: .milliseconds(20))
            }
            for viewer in viewers { viewer.stop() }
            return (accepted, viewers.map { $0.tally.withLock { $0 } })
        }
    }

    // MARK: Fan-out

    /// Rows inserted straight into PostgreSQL (batches of 10, so every doorbell carries its
    /// events) reach one raw LISTEN client and `fanoutClients` SSE clients of one tenant stream.
    private func fanOut(fleet: Fleet, baseline: BenchmarkBaseline) async throws -> BenchReport.FanOut {
        let tenant = fleet.tenants[0]
        let driver = fleet.drivers[tenant.drivers[0]]
        let raw = RawListener()
        try await raw.start(settings: settings, channel: BusTopic.tenant(TenantID(tenant.id)!).channel, logger: logger)
        let counters = LoadCounters()
        let sseLatency = LatencyRecorder()
        let viewers = (0..<plan.fanoutClients).map { _ in
            Viewer(stream: .tenant(tenant.id), transport: .sse, devices: [driver.index], deviceCount: fleet.drivers.count,
                   token: tenant.token, latency: sseLatency, counters: counters)
        }
        let batch = 10
        let interval = Duration.seconds(1) / (plan.fanoutRate / Double(batch))
        let (accepted, tallies) = try await watching(viewers) {
            let sent = try await openLoop(interval: interval, devices: [driver]) { driver, n in
                try await baseline.insertBatch(tenant: driver.tenant, device: driver.deviceID,
                                               rowsJSON: Bench.rowsJSON(count: batch, device: driver.index, first: (n - 1) * batch + 1))
                return true
            }
            return sent.mapValues { $0 * Int64(batch) }
        }
        await raw.stop()
        let posted = Int(accepted[driver.index])
        // Rates over the production window: what each side received per second of it.
        let producing = plan.durationSeconds
        let rawRate = Double(raw.events.load(ordering: .relaxed)) / producing
        let sseRate = Double(counters.deliveries.load(ordering: .relaxed)) / producing
        let result = BenchReport.FanOut(
            clients: plan.fanoutClients, eventsPosted: posted, rawEventsPerSecond: rawRate.rounded(), sseMessagesPerSecond: sseRate.rounded(),
            perClientRatio: ratio(sseRate / Double(max(plan.fanoutClients, 1)), rawRate),
            rawLatencyMs: raw.latency.summary, sseLatencyMs: sseLatency.summary,
            addedP50Ms: ((sseLatency.summary.p50 - raw.latency.summary.p50) * 1_000).rounded() / 1_000,
            addedP99Ms: ((sseLatency.summary.p99 - raw.latency.summary.p99) * 1_000).rounded() / 1_000,
            lost: tallies.reduce(0) { $0 + $1.lost(accepted: accepted) }, duplicated: tallies.reduce(0) { $0 + $1.duplicates },
            resets: tallies.reduce(0) { $0 + $1.resets })
        progress(String(format: "fan-out to %d SSE clients: %.0f messages/s (raw LISTEN %.0f events/s, per-client ratio %.3f); added latency p50 %.2f ms p99 %.2f ms; lost %lld duplicated %d",
                        plan.fanoutClients, sseRate, rawRate, result.perClientRatio, result.addedP50Ms, result.addedP99Ms, result.lost, result.duplicated))
        return result
    }

    // MARK: Snapshot

    private func snapshot(repository: TrackingRepository, baseline: BenchmarkBaseline, http: HTTPClient, tag: String) async throws -> BenchReport.SnapshotTiming {
        let password = "snap-\(Fleet.makeTag())-\(Fleet.makeTag())"
        var fleet = try await Fleet.provision(repository: repository, tag: "s\(tag)", tenantCount: 1, driverCount: 1, password: password)
        try await fleet.logIn(baseURL: baseURL, http: http, password: password)
        let tenant = fleet.tenants[0]
        let devices = try await baseline.createDevices(tenant: tenant.id, count: plan.snapshotDevices, prefix: "snap-")
        try await baseline.seedLatestPositions(tenant: tenant.id, devices: devices, center: (52.52, 13.405))
        let url = baseURL + "/api/v1/snapshot"
        func fetch(gzip: Bool) async throws -> (Double, Int, String) {
            var headers = ["Authorization": "Bearer \(tenant.token)"]
            if gzip { headers["Accept-Encoding"] = "gzip" }
            let began = ContinuousClock.now
            let (status, body) = try await LoadHTTP.sendRaw(http, "GET", url, body: nil, headers: headers, timeout: .seconds(60))
            let ms = (ContinuousClock.now - began).secondsDouble * 1_000
            guard status == 200 else { throw LoadError.refused("snapshot answered \(status)") }
            return (ms, body.readableBytes, gzip ? "" : String(buffer: body))
        }
        _ = try await fetch(gzip: true)  // warm the plan and the caches
        var times: [Double] = []
        var gzipBytes = 0
        for _ in 0..<5 {
            let (ms, bytes, _) = try await fetch(gzip: true)
            times.append(ms)
            gzipBytes = bytes
        }
        var identityTimes: [Double] = []
        var identity = (0, "")
        for _ in 0..<3 {
            let (ms, bytes, text) = try await fetch(gzip: false)
            identityTimes.append(ms)
            identity = (bytes, text)
        }
        let positions = identity.1.components(separatedBy: #""device_id""#).count - 1
        times.sort()
        identityTimes.sort()
        let result = BenchReport.SnapshotTiming(devices: plan.snapshotDevices + 1, positions: positions, gzipBytes: gzipBytes,
                                                identityBytes: identity.0, medianMs: (times[times.count / 2] * 100).rounded() / 100,
                                                minMs: (times[0] * 100).rounded() / 100,
                                                identityMedianMs: (identityTimes[identityTimes.count / 2] * 100).rounded() / 100)
        progress(String(format: "snapshot of %d positions: gzip %d bytes (identity %d) in %.1f ms median (min %.1f; identity %.1f ms)",
                        positions, gzipBytes, identity.0, result.medianMs, result.minMs, result.identityMedianMs))
        return result
    }

    // MARK: Idle connections

    private func idle(repository: TrackingRepository, http: HTTPClient, tag: String) async throws -> [BenchReport.Idle] {
        let password = "idle-\(Fleet.makeTag())-\(Fleet.makeTag())"
        var fleet = try await Fleet.provision(repository: repository, tag: "i\(tag)", tenantCount: 1, driverCount: 1, password: password)
        try await fleet.logIn(baseURL: baseURL, http: http, password: password)
        let tenant = fleet.tenants[0]
        var results: [BenchReport.Idle] = []
        for count in plan.idleConnections {
            let counters = LoadCounters()
            let latency = LatencyRecorder()
            let viewers = (0..<count).map { _ in
                Viewer(stream: .tenant(tenant.id), transport: .sse, devices: [], deviceCount: 1, token: tenant.token,
                       latency: latency, counters: counters)
            }
            try await Task.sleep(for: .seconds(1))
            let before = serverPID.flatMap { ProcessStats.residentBytes(pid: $0) }
            let (opened, after): (Int, Int?) = try await withThrowingTaskGroup(of: Void.self) { group in
                defer { group.cancelAll() }
                // Waves of 250, so the accept queue never overflows.
                for wave in stride(from: 0, to: count, by: 250) {
                    for viewer in viewers[wave..<min(wave + 250, count)] {
                        group.addTask { await viewer.run(baseURL: baseURL) }
                    }
                    let deadline = ContinuousClock.now + .seconds(60)
                    while viewers[wave..<min(wave + 250, count)].contains(where: { !$0.opened && $0.tally.withLock { $0.failure == nil } }),
                          ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                try await Task.sleep(for: .seconds(2))
                let after = serverPID.flatMap { ProcessStats.residentBytes(pid: $0) }
                let opened = viewers.filter(\.opened).count
                for viewer in viewers { viewer.stop() }
                return (opened, after)
            }
            var entry = BenchReport.Idle(connections: count, opened: opened, rssBytesBefore: before, rssBytesAfter: after)
            if let before, let after, opened > 0 { entry.bytesPerConnection = (after - before) / opened }
            progress("idle SSE connections: \(opened) of \(count) open; server RSS \(before.map { "\($0 / 1_024) KB" } ?? "n/a") → \(after.map { "\($0 / 1_024) KB" } ?? "n/a"), \(entry.bytesPerConnection.map { "\($0) bytes" } ?? "n/a") per connection")
            results.append(entry)
            try await Task.sleep(for: .seconds(2))
        }
        return results
    }
}
