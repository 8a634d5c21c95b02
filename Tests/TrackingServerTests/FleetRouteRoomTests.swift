import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A route room's opening snapshot: positions belong to devices, so while the route is in
/// progress it is its driver's position; before (planned) it is empty. The room's events stay
/// those logged with the route.
@Suite("fleet: route room snapshot", .timeLimit(.minutes(3)))
struct FleetRouteRoomTests {
    static func positions(_ snapshot: WSMessage) -> [[String: Any]] {
        snapshot.object["positions"] as? [[String: Any]] ?? []
    }

    @Test("planned: empty; in progress: the driver's latest position; another driver's device is never in it")
    func snapshot() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let staff = try await TenantStaff.create(live)
                let admin = staff.admin.accessToken
                let device = staff.acme.device.id.uuidString.lowercased()
                let (other, otherKey) = try await live.repository.createDevice(tenant: staff.acme.tenant, name: "van-2", group: "default", grade: 0)
                let (_, routeID) = try await FleetTests.driverAndRoute(live, bearer: admin, device: staff.acme.device.id)
                let now = Date().iso8601
                try await live.postPositions(#"{"latitude":52.5,"longitude":13.4,"timestamp":"\#(now)"}"#, apiKey: staff.acme.apiKey, expecting: 1)
                try await live.postPositions(#"{"latitude":48.1,"longitude":11.6,"timestamp":"\#(now)"}"#, apiKey: otherKey, expecting: 1)

                let socket = try await ws.open("/ws", bearer: admin)
                let planned = try await socket.joinRoom("route:\(routeID)")
                #expect(Self.positions(planned).isEmpty, "a planned route has no position yet: \(planned)")
                try await socket.leave("route:\(routeID)")
                _ = try await socket.expect("left", room: "route:\(routeID)")

                let started = try await FleetTests.patch(live, "/api/v1/routes/\(routeID)/status", bearer: admin, json: #"{"status":"in_progress"}"#)
                #expect(started.status == 200, "\(started.body)")
                let driving = try await socket.joinRoom("route:\(routeID)")
                let shown = Self.positions(driving)
                #expect(shown.count == 1, "\(driving)")
                #expect(shown.first?["device_id"] as? String == device)
                #expect(shown.first?["latitude"] as? Double == 52.5)
                #expect(!driving.text.contains(other.id.uuidString.lowercased()), "another driver's device is not in the route room")
            }
        }
    }
}
