import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingLoad
import TrackingStore
import TrackingTestSupport

/// `pgtrack demo`'s data: what a first start shows, and that it can be removed without a trace.
@Suite("Demo tenant")
struct DemoFleetTests {
    static func login(_ live: LiveNode, _ email: String, password: String) async throws -> String {
        let reply = try await live.post("/api/v1/auth/login", json: #"{"tenant":"demo","email":"\#(email)","password":"\#(password)"}"#)
        guard reply.status == 200, let token = try reply.object()["access_token"] as? String else {
            throw SSEClientError(description: "demo login of \(email) answered \(reply.status): \(reply.body.prefix(300))")
        }
        return token
    }

    static func count(_ live: LiveNode, _ sql: String) async throws -> Int {
        try await TripSQL.withConnection(live) { connection in
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: TestCluster.logger).collect()
            return try rows.first?.decode(Int.self) ?? -1
        }
    }

    @Test("a van that drives its track arrives at its route's first customer; the north viewer sees only the north group")
    func vanArrivesAtFirstVisit() async throws {
        try await LiveNode.run { live in
            let fleet = try await DemoFleet.provision(repository: live.repository.asNode, count: 6, password: "demo-test-pw", bcryptCost: 4)
            #expect(fleet.vehicles.count == 6)
            // Van 01 is on a route (vans 3 and 6 have none, every fifth is parked).
            let van = fleet.vehicles[0]
            var track = StreetTrack(seed: van.seed)
            let first = DemoFleet.visitTimes[0]
            let start = Date().addingTimeInterval(-Double(first) - 5)
            let fixes = (1...first).map { second -> String in
                let fix = track.advance(seconds: 1)
                let time = start.addingTimeInterval(Double(second)).formatted(.iso8601)
                return #"{"latitude":\#(fix.latitude),"longitude":\#(fix.longitude),"speed":\#(fix.speed),"heading":\#(fix.heading),"timestamp":"\#(time)"}"#
            }
            let posted = try await live.post("/api/v1/locations", apiKey: van.apiKey, json: "[" + fixes.joined(separator: ",") + "]")
            try #require(posted.status == 202, "\(posted.body)")
            let arrived = try await Self.count(live, """
                SELECT count(*)::int FROM visits v JOIN routes r ON r.id = v.route_id JOIN drivers d ON d.id = r.driver_id
                 WHERE d.device_id = '\(van.deviceID.uuidString.lowercased())' AND v.sequence = 1 AND v.status = 'arrived'
                """)
            #expect(arrived == 1, "the first visit's customer sits where the van is after \(first) s of its track")
            let pending = try await Self.count(live, "SELECT count(*)::int FROM visits WHERE status = 'pending'")
            #expect(pending > 0, "later visits are still ahead")

            let viewer = try await Self.login(live, DemoFleet.viewerEmail, password: fleet.password)
            let devices = try await live.get("/api/v1/devices", bearer: viewer)
            let groups = Set((try devices.object()["devices"] as? [[String: Any]] ?? []).compactMap { $0["group"] as? String })
            check(groups == ["north"], "the viewer's scope shows only the north group, got \(groups) from \(devices.body.prefix(300))")
        }
    }

    @Test("the demo vans post fixes that every van's marker shows, and --remove leaves nothing behind")
    func drivingAndRemoval() async throws {
        try await LiveNode.run { live in
            let other = TenantID("other-\(UUID().uuidString.prefix(6).lowercased())")!
            try await live.repository.createTenant(id: other, name: "Not the demo")
            _ = try await live.repository.createDevice(tenant: other, name: "keep me", group: "default", grade: 0)
            let fleet = try await DemoFleet.provision(repository: live.repository.asNode, count: 5, password: "demo-test-pw", bcryptCost: 4)
            let driving = Task { try await DemoDriving(fleet: fleet, baseURL: live.base).run { _ in } }
            defer { driving.cancel() }
            let admin = try await Self.login(live, DemoFleet.adminEmail, password: fleet.password)
            let ceiling = ContinuousClock.now + .seconds(60)
            var shown = 0
            while shown < 5, ContinuousClock.now < ceiling {
                let snapshot = try await live.get("/api/v1/snapshot", bearer: admin)
                shown = (try snapshot.object()["positions"] as? [Any])?.count ?? 0
                if shown < 5 { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(shown == 5, "every van's fix reaches the snapshot")
            driving.cancel()
            _ = await driving.result

            // A second start replaces the tenant instead of adding to it.
            _ = try await DemoFleet.provision(repository: live.repository.asNode, count: 5, password: "demo-test-pw", bcryptCost: 4)
            #expect(try await Self.count(live, "SELECT count(*)::int FROM devices WHERE tenant_id = 'demo'") == 5)
            #expect(try await live.repository.asNode.removeTenant(DemoFleet.tenant))
            #expect(try await live.repository.asNode.removeTenant(DemoFleet.tenant) == false)
            for table in ["devices", "users", "drivers", "routes", "visits", "sync.customers", "change_log", "change_log_heads", "positions"] {
                #expect(try await Self.count(live, "SELECT count(*)::int FROM \(table) WHERE tenant_id = 'demo'") == 0, "\(table)")
            }
            #expect(try await Self.count(live, "SELECT count(*)::int FROM devices WHERE tenant_id = '\(other.rawValue)'") == 1)
        }
    }
}
