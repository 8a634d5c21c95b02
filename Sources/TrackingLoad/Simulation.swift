import AsyncHTTPClient
import Foundation
import Logging
import Synchronization

/// What to simulate.
public struct SimulationPlan: Codable, Sendable {
    public enum Transport: String, Codable, Sendable, CaseIterable { case sse, ws, mixed }

    public var scenario: String
    public var tenants: Int
    public var drivers: Int
    public var rateHz: Double
    public var tenantViewers: Int
    public var bookingViewers: Int
    public var transport: Transport
    public var durationSeconds: Double
    /// Share of drivers on an active booking.
    public var bookingFraction: Double

    public init(scenario: String, tenants: Int, drivers: Int, rateHz: Double, tenantViewers: Int, bookingViewers: Int,
                transport: Transport, durationSeconds: Double, bookingFraction: Double) {
        self.scenario = scenario
        self.tenants = tenants
        self.drivers = drivers
        self.rateHz = rateHz
        self.tenantViewers = tenantViewers
        self.bookingViewers = bookingViewers
        self.transport = transport
        self.durationSeconds = durationSeconds
        self.bookingFraction = bookingFraction
    }

    /// The reference scenario: 10 tenants × 100 drivers at 1 Hz, a third on a booking; 400
    /// tenant viewers (40 per tenant) and 100 booking viewers, half SSE and half WebSocket.
    public static let seed = SimulationPlan(scenario: "seed", tenants: 10, drivers: 1_000, rateHz: 1, tenantViewers: 400,
                                            bookingViewers: 100, transport: .mixed, durationSeconds: 60, bookingFraction: 1.0 / 3)
}

public struct SimulationReport: Codable, Sendable {
    public struct Ingest: Codable, Sendable {
        public var requests: Int
        public var errors: Int
        /// Ticks that made no post because the driver was behind (see `DriverLoop.run`):
        /// requests + errors + skippedTicks is every tick the drivers planned.
        public var skippedTicks: Int
        public var requestsPerSecond: Double
        public var positionsPerSecond: Double
        public var latencyMs: LatencySummary
    }

    public struct Delivery: Codable, Sendable {
        public var events: Int
        public var eventsPerSecond: Double
        public var expected: Int64
        public var lost: Int64
        public var duplicated: Int
        public var outOfOrder: Int
        public var resets: Int
        public var streamFailures: Int
        public var latencyMs: LatencySummary
        public var sseLatencyMs: LatencySummary
        public var wsLatencyMs: LatencySummary
    }

    public struct Server: Codable, Sendable {
        public var pid: Int32?
        public var rssBytesBeforeViewers: Int?
        public var rssBytesWithViewers: Int?
        public var rssBytesAtEnd: Int?
        public var bytesPerConnection: Int?
        public var resources: ResourceUse
    }

    public var plan: SimulationPlan
    public var target: String
    public var viewers: Int
    public var sseViewers: Int
    public var wsViewers: Int
    public var bookedDrivers: Int
    public var elapsedSeconds: Double
    public var ingest: Ingest
    public var delivery: Delivery
    public var server: Server
}

/// Runs a plan against a server: viewers connect and open first, then drivers post for the
/// duration, then the viewers drain until every accepted fix arrived (or 10 s pass).
public struct Simulation: Sendable {
    public let plan: SimulationPlan
    public let baseURL: String
    public let serverPID: Int32?
    public let logger: Logger
    public let progressInterval: Duration
    public let progress: @Sendable (String) -> Void

    public init(plan: SimulationPlan, baseURL: String, serverPID: Int32?, logger: Logger, progressInterval: Duration = .seconds(5),
                progress: @escaping @Sendable (String) -> Void) {
        self.plan = plan
        self.baseURL = baseURL
        self.serverPID = serverPID
        self.logger = logger
        self.progressInterval = progressInterval
        self.progress = progress
    }

    public func run(fleet: Fleet) async throws -> SimulationReport {
        let counters = LoadCounters()
        let ingestLatency = LatencyRecorder()
        let sseLatency = LatencyRecorder()
        let wsLatency = LatencyRecorder()
        let (host, port) = try LoadHTTP.hostAndPort(baseURL)
        return try await run(fleet: fleet, host: host, port: port, counters: counters, ingestLatency: ingestLatency,
                             sseLatency: sseLatency, wsLatency: wsLatency)
    }

    private func run(fleet: Fleet, host: String, port: Int, counters: LoadCounters, ingestLatency: LatencyRecorder,
                     sseLatency: LatencyRecorder, wsLatency: LatencyRecorder) async throws -> SimulationReport {
        let viewerCount = plan.tenantViewers + plan.bookingViewers
        let viewers = makeViewers(fleet: fleet, sse: sseLatency, ws: wsLatency, counters: counters)
        let rssBefore = serverPID.flatMap { ProcessStats.residentBytes(pid: $0) }

        return try await withThrowingTaskGroup(of: Void.self) { group in
            for viewer in viewers {
                group.addTask { await viewer.run(baseURL: baseURL) }
            }
            defer { group.cancelAll() }
            // Every viewer has its snapshot before the first fix, so each must receive all of them.
            let openDeadline = ContinuousClock.now + .seconds(120)
            while viewers.contains(where: { !$0.opened }) {
                if counters.streamFailures.load(ordering: .relaxed) > 0 {
                    let failure = viewers.compactMap { $0.tally.withLock { $0.failure } }.first ?? "unknown"
                    throw LoadError.refused("a viewer could not open its stream: \(failure)")
                }
                guard ContinuousClock.now < openDeadline else {
                    throw LoadError.server("only \(viewers.filter(\.opened).count) of \(viewers.count) streams opened within 120 s")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .milliseconds(500))  // let the server settle after the connection burst
            let rssWithViewers = serverPID.flatMap { ProcessStats.residentBytes(pid: $0) }
            progress("\(viewers.count) streams open; \(plan.drivers) drivers start posting at \(plan.rateHz) Hz for \(plan.durationSeconds) s")

            let window = ResourceWindow(serverPID: serverPID)
            let start = ContinuousClock.now
            let end = start + .milliseconds(Int64(plan.durationSeconds * 1_000))
            let interval = Duration.milliseconds(Int64(1_000 / plan.rateHz))
            let accepted = try await withThrowingTaskGroup(of: (Int, Int64).self) { drivers in
                for driver in fleet.drivers {
                    drivers.addTask {
                        let loop = DriverLoop(driver: driver, interval: interval, host: host, port: port,
                                              counters: counters, ingestLatency: ingestLatency)
                        return (driver.index, await loop.run(start: start, end: end))
                    }
                }
                drivers.addTask {
                    try await reportProgress(counters: counters, latency: [sseLatency, wsLatency], until: end)
                    return (-1, 0)
                }
                var accepted = [Int64](repeating: 0, count: fleet.drivers.count)
                for try await (index, count) in drivers where index >= 0 { accepted[index] = count }
                return accepted
            }
            let driversDone = ContinuousClock.now
            let resources = window.finish()
            // Drain: what was accepted is committed; its notifications are on their way.
            let drainDeadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < drainDeadline,
                  viewers.contains(where: { viewer in viewer.tally.withLock { !$0.caughtUp(accepted: accepted) } }) {
                try await Task.sleep(for: .milliseconds(50))
            }
            for viewer in viewers { viewer.stop() }
            let rssEnd = serverPID.flatMap { ProcessStats.residentBytes(pid: $0) }
            let elapsed = (driversDone - start).secondsDouble
            let tallies = viewers.map { $0.tally.withLock { $0 } }
            let events = tallies.reduce(0) { $0 + $1.events }
            let posts = counters.posts.load(ordering: .relaxed)
            let perConnection: Int? = {
                guard let before = rssBefore, let with = rssWithViewers, viewerCount > 0 else { return nil }
                return (with - before) / viewerCount
            }()
            return SimulationReport(
                plan: plan, target: baseURL, viewers: viewerCount,
                sseViewers: tallies.filter { $0.transport == .sse }.count, wsViewers: tallies.filter { $0.transport == .ws }.count,
                bookedDrivers: fleet.drivers.filter { $0.booking != nil }.count,
                elapsedSeconds: (elapsed * 100).rounded() / 100,
                ingest: .init(requests: posts, errors: counters.postErrors.load(ordering: .relaxed),
                              skippedTicks: counters.skippedTicks.load(ordering: .relaxed),
                              requestsPerSecond: rate(posts, elapsed), positionsPerSecond: rate(counters.positions.load(ordering: .relaxed), elapsed),
                              latencyMs: ingestLatency.summary),
                delivery: .init(events: events, eventsPerSecond: rate(events, elapsed),
                                expected: tallies.reduce(0) { $0 + $1.expected(accepted: accepted) },
                                lost: tallies.reduce(0) { $0 + $1.lost(accepted: accepted) },
                                duplicated: tallies.reduce(0) { $0 + $1.duplicates },
                                outOfOrder: tallies.reduce(0) { $0 + $1.outOfOrder },
                                resets: tallies.reduce(0) { $0 + $1.resets },
                                streamFailures: tallies.filter { $0.failure != nil }.count,
                                latencyMs: LatencyRecorder.merged([sseLatency, wsLatency]),
                                sseLatencyMs: sseLatency.summary, wsLatencyMs: wsLatency.summary),
                server: .init(pid: serverPID, rssBytesBeforeViewers: rssBefore, rssBytesWithViewers: rssWithViewers,
                              rssBytesAtEnd: rssEnd, bytesPerConnection: perConnection, resources: resources))
        }
    }

    private func rate(_ count: Int, _ seconds: Double) -> Double {
        seconds > 0 ? (Double(count) / seconds * 10).rounded() / 10 : 0
    }

    /// Tenant viewers round-robin over tenants; booking viewers over booked drivers, spread over
    /// tenants; transports alternate for `mixed`.
    func makeViewers(fleet: Fleet, sse: LatencyRecorder, ws: LatencyRecorder, counters: LoadCounters) -> [Viewer] {
        var viewers: [Viewer] = []
        func transport(_ n: Int) -> StreamTally.Transport {
            switch plan.transport {
            case .sse: return .sse
            case .ws: return .ws
            case .mixed: return n % 2 == 0 ? .sse : .ws
            }
        }
        for n in 0..<plan.tenantViewers {
            let tenant = fleet.tenants[n % fleet.tenants.count]
            let t = transport(n)
            viewers.append(Viewer(stream: .tenant(tenant.id), transport: t, devices: tenant.drivers, deviceCount: fleet.drivers.count,
                                  token: tenant.token, latency: t == .sse ? sse : ws, counters: counters))
        }
        // Interleave tenants so booking viewers spread over them.
        let booked = fleet.tenants.map { tenant in tenant.drivers.filter { fleet.drivers[$0].booking != nil } }
        var order: [Int] = []
        for round in 0..<(booked.map(\.count).max() ?? 0) {
            for list in booked where round < list.count { order.append(list[round]) }
        }
        if !order.isEmpty {
            for n in 0..<plan.bookingViewers {
                let driver = fleet.drivers[order[n % order.count]]
                let token = fleet.tenants.first { $0.id == driver.tenant }!.token
                let t = transport(n)
                viewers.append(Viewer(stream: .booking(driver.booking!), transport: t, devices: [driver.index],
                                      deviceCount: fleet.drivers.count, token: token, latency: t == .sse ? sse : ws, counters: counters))
            }
        }
        return viewers
    }

    private func reportProgress(counters: LoadCounters, latency: [LatencyRecorder], until end: ContinuousClock.Instant) async throws {
        let start = ContinuousClock.now
        var last = (posts: 0, deliveries: 0, at: start)
        while ContinuousClock.now < end {
            try await Task.sleep(for: progressInterval)
            let now = ContinuousClock.now
            let posts = counters.posts.load(ordering: .relaxed)
            let deliveries = counters.deliveries.load(ordering: .relaxed)
            let seconds = (now - last.at).secondsDouble
            let summary = LatencyRecorder.merged(latency)
            progress(String(format: "[%3.0fs] ingest %.0f req/s (%d errors), delivered %.0f events/s, streams %d, e2e p50 %.2f ms p99 %.2f ms max %.1f ms, duplicates %d",
                            (now - start).secondsDouble, Double(posts - last.posts) / seconds, counters.postErrors.load(ordering: .relaxed),
                            Double(deliveries - last.deliveries) / seconds, counters.streamsOpen.load(ordering: .relaxed),
                            summary.p50, summary.p99, summary.max, counters.duplicates.load(ordering: .relaxed)))
            last = (posts, deliveries, now)
        }
    }
}
