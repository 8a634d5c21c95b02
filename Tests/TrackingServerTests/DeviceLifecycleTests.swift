import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Removing a marker keeps the history (`removed`); purging removes both (`purged`); each is
/// pushed only to subscribers who may see the device.
@Suite("devices: remove marker and purge", .timeLimit(.minutes(3)))
struct DeviceLifecycleTests {
    static func historyCount(_ live: LiveNode, _ device: UUID) async throws -> Int {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            try await Fixes.count("SELECT count(*)::int FROM positions WHERE device_id = \(device)", on: connection)
        }
    }

    @Test("DELETE …/position: `removed` to subscribers in scope, marker gone, history kept, idempotent")
    func removeMarker() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let dispatcher = try await live.user(.dispatcher, in: fleet.tenant)
            let trucksOnly = try await live.user(.viewer, in: fleet.tenant, scope: .upTo(["trucks": 9]))
            let everything = try await live.stream("/api/v1/stream", bearer: dispatcher.accessToken)
            let scoped = try await live.stream("/api/v1/stream", bearer: trucksOnly.accessToken)
            _ = try await everything.opening()
            _ = try await scoped.opening()
            try await live.postPositions(Fixes.object(5), apiKey: fleet.van1.apiKey, expecting: 1)
            #expect(try await everything.next().deviceID == fleet.van1.id)

            let reply = try await live.delete("/api/v1/devices/\(fleet.van1.id)/position", bearer: dispatcher.accessToken)
            #expect(reply.status == 200)
            #expect(try reply.object()["removed"] as? Bool == true)
            let removed = try await everything.next("the removed event")
            #expect(removed.event == "removed")
            #expect(removed.deviceID == fleet.van1.id)
            #expect(removed.seq == (try reply.object()["seq"] as? Int).map(Int64.init))

            #expect(try await live.get("/api/v1/devices/\(fleet.van1.id)/position", bearer: dispatcher.accessToken).status == 404)
            #expect(try await Self.historyCount(live, fleet.van1.device.id) == 2, "both fixes of van1 stay in the history")
            let snapshot = try await live.get("/api/v1/snapshot", bearer: dispatcher.accessToken).object()
            let listed = (snapshot["positions"] as? [[String: Any]] ?? []).compactMap { $0["device_id"] as? String }
            #expect(Set(listed) == [fleet.van5.id, fleet.truck2.id])

            let again = try await live.delete("/api/v1/devices/\(fleet.van1.id)/position", bearer: dispatcher.accessToken)
            #expect(again.status == 200)
            #expect(try again.object()["removed"] as? Bool == false)

            // The trucks-only viewer never heard of van1; its next event is truck2's removal.
            _ = try await live.delete("/api/v1/devices/\(fleet.truck2.id)/position", bearer: dispatcher.accessToken)
            let first = try await scoped.next("the first event for the trucks-only viewer")
            #expect(first.event == "removed")
            #expect(first.deviceID == fleet.truck2.id)
        }
    }

    @Test("POST …/purge: `purged` with the count, marker and every history row gone, device and key kept")
    func purge() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            try await live.postPositions(Fixes.array(10..<14), apiKey: fleet.van5.apiKey, expecting: 4)
            let stream = try await live.stream("/api/v1/stream", bearer: admin.accessToken)
            _ = try await stream.opening()

            let reply = try await live.post("/api/v1/devices/\(fleet.van5.id)/purge", bearer: admin.accessToken, json: "")
            #expect(reply.status == 200)
            #expect(try reply.object()["positions_deleted"] as? Int == 5)
            let purged = try await stream.next("the purged event")
            #expect(purged.event == "purged")
            #expect(purged.deviceID == fleet.van5.id)
            #expect(try purged.object()["positions_deleted"] as? Int == 5)

            #expect(try await Self.historyCount(live, fleet.van5.device.id) == 0)
            #expect(try await Self.historyCount(live, fleet.van1.device.id) == 1, "other devices keep their history")
            #expect(try await live.get("/api/v1/devices/\(fleet.van5.id)/position", bearer: admin.accessToken).status == 404)
            // The device and its key still work: it can post again.
            try await live.postPositions(Fixes.object(20), apiKey: fleet.van5.apiKey, expecting: 1)
            #expect(try await stream.next().deviceID == fleet.van5.id)
        }
    }

    @Test("the SQL functions push the same events as the REST API")
    func sqlFunctions() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let stream = try await live.stream("/api/v1/stream", apiKey: fleet.truck2.apiKey)
            _ = try await stream.opening()
            try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await connection.query("SELECT pgtrack_remove_marker('acme', \(fleet.truck2.device.id))", logger: TestCluster.logger)
                try await connection.query("SELECT pgtrack_purge_device('acme', \(fleet.truck2.device.id))", logger: TestCluster.logger)
            }
            let events = try await stream.collect(2)
            #expect(events.map(\.event) == ["removed", "purged"])
            check(events.allSatisfy { $0.deviceID == fleet.truck2.id })
        }
    }

    @Test("DELETE /api/v1/devices/{id}: `purged`, then the device, its keys and history are gone")
    func deleteDevice() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let stream = try await live.stream("/api/v1/stream", bearer: admin.accessToken)
            _ = try await stream.opening()
            #expect(try await live.delete("/api/v1/devices/\(fleet.van1.id)", bearer: admin.accessToken).status == 200)
            let purged = try await stream.next("the purged event")
            #expect(purged.event == "purged")
            #expect(purged.deviceID == fleet.van1.id)
            #expect(try await live.get("/api/v1/devices/\(fleet.van1.id)", bearer: admin.accessToken).status == 404)
            #expect(try await live.post("/api/v1/locations", apiKey: fleet.van1.apiKey, json: Fixes.object(9)).status == 401)
            #expect(try await Self.historyCount(live, fleet.van1.device.id) == 0)
            #expect(try await live.delete("/api/v1/devices/\(fleet.van1.id)", bearer: admin.accessToken).status == 404)
        }
    }
}
