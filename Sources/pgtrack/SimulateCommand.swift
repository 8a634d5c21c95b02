import ArgumentParser
import Foundation
import Logging
import TrackingLoad
import TrackingStore

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load generator over the public HTTP API: drivers posting fixes, viewers on SSE/WebSocket streams.",
        discussion: """
            Without --target it starts `pgtrack serve` as a child process (on --port) against DATABASE_URL or the local \
            cluster. It provisions its own tenants, devices, admins and bookings (through the database, as `pgtrack admin` \
            does), so the database must be reachable either way. Reports ingest rate and latency, end-to-end delivery \
            latency (fix posted → event received), events lost or duplicated (checked by seq per stream and by each \
            device's fix number), server RSS and CPU. --scenario seed: 10 tenants × 100 drivers at 1 Hz, 400 tenant and \
            100 booking viewers, half SSE half WebSocket, 60 s.
            """)

    @Option(help: "A named scenario (seed); other options override its values.") var scenario: String?
    @Option(help: "Simulated drivers (devices).") var drivers: Int?
    @Option(help: "Fixes per second per driver.") var rate: Double?
    @Option(help: "Viewers in all (a fifth on booking streams unless --booking-viewers says otherwise).") var viewers: Int?
    @Option(help: "Of the viewers, how many watch a booking stream.") var bookingViewers: Int?
    @Option(help: "Tenants (drivers are spread evenly; default: one per 100 drivers).") var tenants: Int?
    @Option(help: "Seconds of driving.") var duration: Double?
    @Option(help: "Viewer transport: sse, ws or mixed (half each).") var transport: String?
    @Option(help: "Share of drivers on an active booking.") var bookingFraction: Double?
    @Option(help: "Base URL of a running server (e.g. http://127.0.0.1:8080); without it a server is started.") var target: String?
    @Option(help: "PID of the --target server, to report its RSS and CPU.") var serverPid: Int32?
    @Option(help: "Port of the server started when there is no --target.") var port = 18_080
    @Option(help: "Seconds between progress lines (on standard error).") var progressSeconds: Double = 5
    @Flag(help: "Print the report as one line of JSON.") var json = false
    @OptionGroup var database: DatabaseOptions

    func plan() throws -> SimulationPlan {
        var plan: SimulationPlan
        switch scenario {
        case nil:
            plan = SimulationPlan(scenario: "custom", tenants: 0, drivers: 10, rateHz: 1, tenantViewers: 8, bookingViewers: 2,
                                  transport: .mixed, durationSeconds: 10, bookingFraction: 1.0 / 3)
        case "seed": plan = .seed
        case let other?: throw ValidationError("unknown --scenario \(other); known: seed")
        }
        if let drivers { plan.drivers = drivers; if scenario == nil || tenants == nil { plan.tenants = 0 } }
        if let tenants { plan.tenants = tenants }
        if plan.tenants == 0 { plan.tenants = max(1, (plan.drivers + 99) / 100) }
        if let rate { plan.rateHz = rate }
        if let viewers {
            let booking = bookingViewers ?? viewers / 5
            plan.tenantViewers = viewers - booking
            plan.bookingViewers = booking
        } else if let bookingViewers {
            plan.bookingViewers = bookingViewers
        }
        if let duration { plan.durationSeconds = duration }
        if let transport {
            guard let value = SimulationPlan.Transport(rawValue: transport) else { throw ValidationError("--transport must be sse, ws or mixed") }
            plan.transport = value
        }
        if let bookingFraction { plan.bookingFraction = bookingFraction }
        if scenario != nil || drivers != nil { plan.scenario = scenario ?? "custom" }
        guard (1...20_000).contains(plan.drivers), (1...1_000).contains(plan.tenants), plan.tenants <= plan.drivers else {
            throw ValidationError("--drivers must be 1–20000 and --tenants 1–1000 (at most one per driver)")
        }
        guard plan.rateHz > 0, plan.rateHz <= 100 else { throw ValidationError("--rate must be > 0 and ≤ 100 Hz") }
        guard plan.tenantViewers >= 0, plan.bookingViewers >= 0, plan.tenantViewers + plan.bookingViewers <= 50_000 else {
            throw ValidationError("--viewers must be 0–50000, and --booking-viewers at most --viewers")
        }
        // Each driver and each viewer holds a connection of its own, from one address to one
        // server port: Linux's default ephemeral range gives about 28,000 of them.
        guard plan.drivers + plan.tenantViewers + plan.bookingViewers <= 28_000 else {
            throw ValidationError("--drivers plus --viewers must be at most 28000 (each holds its own connection to the server)")
        }
        guard plan.durationSeconds > 0, plan.durationSeconds <= 86_400 else { throw ValidationError("--duration must be 0–86400 s") }
        guard (0...1).contains(plan.bookingFraction) else { throw ValidationError("--booking-fraction must be 0–1") }
        if plan.bookingViewers > 0 && plan.bookingFraction * Double(plan.drivers / plan.tenants) < 0.5 {
            throw ValidationError("booking viewers need drivers on bookings: raise --booking-fraction or set --booking-viewers 0")
        }
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
        let logger = Logger(label: "pgtrack.simulate")
        let plan = try plan()
        let limit = ProcessStats.raiseOpenFileLimit(to: UInt64(max(65_536, (plan.drivers + plan.tenantViewers + plan.bookingViewers) * 3)))
        let progress: @Sendable (String) -> Void = { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        progress("simulate: \(plan.drivers) drivers in \(plan.tenants) tenants at \(plan.rateHz) Hz, \(plan.tenantViewers) tenant + \(plan.bookingViewers) booking viewers (\(plan.transport.rawValue)), \(plan.durationSeconds) s; open files limit \(limit)")
        let report = try await LoadEnvironment.with(target: target, serverPID: serverPid, port: port, database: database, logger: logger,
                                                    progress: progress) { environment in
            let password = "sim-\(Fleet.makeTag())-\(Fleet.makeTag())"
            var fleet = try await environment.withRepository { repository in
                try await Fleet.provision(repository: repository, tag: Fleet.makeTag(), tenantCount: plan.tenants,
                                          driverCount: plan.drivers, password: password)
            }
            fleet = try await LoadHTTP.withClient(connections: 16) { [fleet] http in
                var fleet = fleet
                try await fleet.logIn(baseURL: environment.baseURL, http: http, password: password)
                try await fleet.acceptBookings(fraction: plan.bookingFraction, baseURL: environment.baseURL, http: http)
                return fleet
            }
            progress("provisioned \(fleet.tenants.count) tenants, \(fleet.drivers.count) devices, \(fleet.drivers.filter { $0.booking != nil }.count) bookings")
            return try await Simulation(plan: plan, baseURL: environment.baseURL, serverPID: environment.serverPID, logger: logger,
                                        progressInterval: .milliseconds(Int64(progressSeconds * 1_000)), progress: progress)
                .run(fleet: fleet)
        }
        if json {
            print(try LoadJSON.line(report))
        } else {
            print(SimulationText.render(report))
        }
    }
}
