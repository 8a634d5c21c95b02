import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// What each kind of caller sees of the tenant stream, the snapshot and single positions.
@Suite("scopes: who sees which devices", .timeLimit(.minutes(3)))
struct ScopeFilterTests {
    @Test("a scoped viewer's snapshot, replay and live events hold only devices in scope")
    func scopedViewer() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let viewer = try await live.user(.viewer, in: fleet.tenant, scope: .oneOf(["vans": [1, 5], "trucks": [3]]))
            let stream = try await live.stream("/api/v1/stream", bearer: viewer.accessToken)
            let snapshot = try await stream.opening()
            #expect(snapshot.snapshotDevices == [fleet.van1.id, fleet.van5.id])

            try await fleet.postRound(live, from: 10)
            let events = try await stream.collect(2)
            #expect(events.map(\.deviceID) == [fleet.van1.id, fleet.van5.id])
            await stream.close()

            // Resume from the snapshot: the replay skips truck2's fixes too.
            let resumed = try await live.stream("/api/v1/stream", bearer: viewer.accessToken, lastEventID: snapshot.id)
            try await live.postPositions(Fixes.object(20), apiKey: fleet.van1.apiKey, expecting: 1)
            let replayed = try await resumed.collect(3)
            #expect(replayed.map(\.event) == ["location_update", "location_update", "location_update"])
            check(replayed.compactMap { try? $0.object().fixIndex } == [10, 11, 20])

            let positions = try await live.get("/api/v1/snapshot", bearer: viewer.accessToken)
            #expect(positions.status == 200)
            let listed = (try positions.object()["positions"] as? [[String: Any]] ?? []).compactMap { $0["device_id"] as? String }
            #expect(Set(listed) == [fleet.van1.id, fleet.van5.id])

            #expect(try await live.get("/api/v1/devices/\(fleet.van1.id)/position", bearer: viewer.accessToken).status == 200)
            let hidden = try await live.get("/api/v1/devices/\(fleet.truck2.id)/position", bearer: viewer.accessToken)
            #expect(hidden.status == 404, "a device outside the scope answers like a missing one")
        }
    }

    @Test("admins and dispatchers without a scope see the whole tenant; with one, only the scope")
    func adminsAndDispatchers() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let dispatcher = try await live.user(.dispatcher, in: fleet.tenant, scope: .upTo(["trucks": 1_000]))
            let all = try await live.stream("/api/v1/stream", bearer: admin.accessToken)
            #expect(try await all.opening().snapshotDevices == Set(fleet.all.map(\.id)))
            let trucks = try await live.stream("/api/v1/stream", bearer: dispatcher.accessToken)
            #expect(try await trucks.opening().snapshotDevices == [fleet.truck2.id])
        }
    }

    @Test("a driver sees only their own device; a device key sees its own group")
    func driverAndDeviceKey() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let driver = try await live.user(.driver, in: fleet.tenant, device: fleet.van5.device.id)
            let driverStream = try await live.stream("/api/v1/stream", bearer: driver.accessToken)
            #expect(try await driverStream.opening().snapshotDevices == [fleet.van5.id])
            let keyStream = try await live.stream("/api/v1/stream", apiKey: fleet.van1.apiKey)
            #expect(try await keyStream.opening().snapshotDevices == [fleet.van1.id, fleet.van5.id], "group vans")

            // The driver posts for their own device with their token.
            let posted = try await live.post("/api/v1/locations", bearer: driver.accessToken, json: Fixes.object(60))
            #expect(posted.status == 202)
            try await fleet.postRound(live, from: 70)
            let driverEvents = try await driverStream.collect(2)
            check(driverEvents.compactMap { try? $0.object().fixIndex } == [60, 71])
            check(driverEvents.allSatisfy { $0.deviceID == fleet.van5.id })
            let keyEvents = try await keyStream.collect(3)
            check(keyEvents.compactMap { try? $0.object().fixIndex } == [60, 70, 71], "truck2's fix 72 is another group")
        }
    }
}
