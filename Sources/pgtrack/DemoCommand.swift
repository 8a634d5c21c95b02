import ArgumentParser
import Dispatch
import Foundation
import Logging
import TrackingLoad
import TrackingStore

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve pgtrack with a demo tenant: vans driving Berlin's streets, drivers, customers, routes, visits.",
        discussion: """
            Creates the tenant `demo` afresh (an old one is removed first): \(DemoFleet.groups.count) groups of vans with \
            drivers, customers with geofences on the vans' streets, and routes of planned visits in progress. Then starts \
            `pgtrack serve` (against DATABASE_URL or the local cluster, as `pgtrack serve` does) and keeps the vans posting \
            a fix a second over the REST API until Ctrl-C. Prints the URL and the logins. --remove deletes the demo tenant \
            and everything in it; no other tenant is touched.
            """)

    @Option(help: "Port of the server.") var port = 8080
    @Option(help: "How many vans.") var vehicles = 30
    @Option(help: "Base URL of a server that is already running (e.g. http://127.0.0.1:8080); without it one is started.")
    var target: String?
    @Flag(help: "Remove the demo tenant and everything in it, then exit.") var remove = false
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard (1...65_535).contains(port) else { throw ValidationError("--port must be 1–65535") }
        guard (1...500).contains(vehicles) else { throw ValidationError("--vehicles must be 1–500") }
        if let target {
            do { _ = try LoadHTTP.hostAndPort(target) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() async throws {
        Pgtrack.bootstrapLogging()
        let logger = Logger(label: "pgtrack.demo")
        let say: @Sendable (String) -> Void = { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        if remove {
            let (settings, startedCluster) = try await database.resolve(logger: logger)
            defer { try? startedCluster?.stop() }
            let removed = try await withPostgresClient(settings, logger: logger) { client in
                try await TrackingRepository(client: client, logger: logger).asNode.removeTenant(DemoFleet.tenant)
            }
            print(removed ? "removed the demo tenant" : "there was no demo tenant")
            return
        }
        // Ctrl-C and SIGTERM end the drive; then the server child and the local cluster stop in order.
        let (stopped, signalSources) = StopSignal.install()
        defer { withExtendedLifetime(signalSources) {} }
        try await LoadEnvironment.with(target: target, serverPID: nil, port: port, database: database, logger: logger,
                                       progress: say) { environment in
            let password = "demo-" + Fleet.makeTag()
            let fleet = try await environment.withRepository { repository in
                try await DemoFleet.provision(repository: repository.asNode, count: vehicles, password: password)
            }
            FileHandle.standardOutput.write(Data("""

                pgtrack demo is running: \(environment.baseURL)/
                  admin:  tenant demo, \(DemoFleet.adminEmail), password \(password)
                  viewer: tenant demo, \(DemoFleet.viewerEmail), same password (sees the north group only)
                \(fleet.vehicles.count) vans post a fix a second. Ctrl-C stops; `pgtrack demo --remove` deletes the demo tenant.

                """.utf8))
            let driving = Task { try await DemoDriving(fleet: fleet, baseURL: environment.baseURL).run(problem: say) }
            for await _ in stopped { break }
            driving.cancel()
            _ = await driving.result
            say("demo: stopping")
        }
    }
}

/// SIGINT and SIGTERM as a stream, taken over from the default handler (which would end the
/// process before the server child and the local cluster are stopped). Keep the returned
/// sources alive for as long as the signals should be heard.
enum StopSignal {
    static func install() -> (AsyncStream<Void>, [any DispatchSourceSignal]) {
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        let sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield() }
            source.resume()
            return source
        }
        return (stream, sources)
    }
}
