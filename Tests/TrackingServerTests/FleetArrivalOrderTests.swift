import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Geofence arrivals keep the route's order in time: a fix older than the route's last arrival
/// (a phone uploading its buffer late) arrives nowhere.
@Suite("fleet: arrival order", .timeLimit(.minutes(3)))
struct FleetArrivalOrderTests {

    @Test("a late fix (older than the route's last arrival) at the next customer arrives nowhere; a current one does")
    func lateFixDoesNotArrive() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let admin = staff.admin.accessToken
            try await FleetTests.syncCustomers(live, tenant: "acme", count: 2)
            let (_, routeID) = try await FleetTests.driverAndRoute(live, bearer: admin, device: staff.acme.device.id)
            var visits: [String] = []
            for i in 0..<2 {
                visits.append(try FleetTests.created(try await live.post("/api/v1/visits", bearer: admin, json:
                    #"{"route_id":"\#(routeID)","customer_id":"c\#(i)","sequence":\#(i + 1)}"#), "visit \(i)"))
            }
            let started = try await FleetTests.patch(live, "/api/v1/routes/\(routeID)/status", bearer: admin, json: #"{"status":"in_progress"}"#)
            #expect(started.status == 200, "\(started.body)")
            func status(_ visit: String) async throws -> String? {
                try await live.get("/api/v1/visits/\(visit)", bearer: admin).object()["status"] as? String
            }
            let arrival = Date().addingTimeInterval(-600)
            let key = staff.acme.apiKey
            try await live.postPositions(TrackPoint.array([FleetTests.fix(0, 0, at: arrival)]), apiKey: key, expecting: 1)
            #expect(try await status(visits[0]) == "arrived")
            try await live.postPositions(TrackPoint.array([FleetTests.fix(1, 0, at: arrival.addingTimeInterval(-60))]), apiKey: key, expecting: 1)
            #expect(try await status(visits[1]) == "pending", "a fix from before the first arrival is no arrival at the second")
            try await live.postPositions(TrackPoint.array([FleetTests.fix(1, 0, at: arrival.addingTimeInterval(60))]), apiKey: key, expecting: 1)
            #expect(try await status(visits[1]) == "arrived")
        }
    }

}
