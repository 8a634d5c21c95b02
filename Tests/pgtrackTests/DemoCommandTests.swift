import Foundation
import Testing
import TrackingTestSupport

/// `pgtrack demo --remove` as an operator runs it; the demo's data and driving are DemoFleetTests.
@Suite("pgtrack demo")
struct DemoCommandTests {
    @Test("demo --remove deletes the demo tenant with its devices and leaves other tenants; a second run says there was none")
    func remove() async throws {
        let url = try await TestCluster.freshDatabase()
        for (tenant, name) in [("demo", "Demo fleet"), ("acme", "Acme")] {
            let created = try await PgtrackProcess.run(["admin", "create-tenant", tenant, "--name", name], database: url)
            try #require(created.status == 0, "\(created)")
        }
        let device = try await PgtrackProcess.run(["admin", "create-device", "--tenant", "demo", "--name", "Van 01"], database: url)
        try #require(device.status == 0, "\(device)")
        let removed = try await PgtrackProcess.run(["demo", "--remove"], database: url)
        #expect(removed.status == 0, "\(removed)")
        #expect(removed.stdout == "removed the demo tenant\n", "\(removed)")
        let again = try await PgtrackProcess.run(["demo", "--remove"], database: url)
        #expect(again.status == 0, "\(again)")
        #expect(again.stdout == "there was no demo tenant\n", "\(again)")
        // acme is still there: creating it again is refused as a duplicate.
        let acme = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme"], database: url)
        #expect(acme.status != 0 && acme.stderr.contains("already exists"), "\(acme)")
    }

    @Test("demo refuses a bad --vehicles or --target before touching the database")
    func badOptions() async throws {
        let vehicles = try await PgtrackProcess.run(["demo", "--vehicles", "0"], database: nil)
        #expect(vehicles.status != 0 && vehicles.stderr.contains("--vehicles must be 1–500"), "\(vehicles)")
        let target = try await PgtrackProcess.run(["demo", "--target", "https://example.com"], database: nil)
        #expect(target.status != 0 && target.stderr.contains("plain http://"), "\(target)")
    }
}
