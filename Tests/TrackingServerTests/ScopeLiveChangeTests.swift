import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A viewer's scope changes while their stream is open: the session sends `remove` for devices
/// no longer visible and `add` for newly visible ones, then only in-scope live events, without
/// reconnecting and without replaying history.
@Suite("scopes: live change on an open stream", .timeLimit(.minutes(3)))
struct ScopeLiveChangeTests {
    @Test("up-to scope → explicit scope: remove van1, add truck2 with its position, then only truck2 live")
    func upToThenExplicit() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let viewer = try await live.user(.viewer, in: fleet.tenant, scope: .upTo(["vans": 3]))
            let stream = try await live.stream("/api/v1/stream", bearer: viewer.accessToken)

            let snapshot = try await stream.opening()
            #expect(snapshot.snapshotDevices == [fleet.van1.id], "up to grade 3 in vans: van1 only")

            try await fleet.postRound(live, from: 10)
            let live1 = try await stream.next("van1's live fix")
            #expect(live1.event == "location_update")
            #expect(live1.deviceID == fleet.van1.id)
            #expect(try live1.object().fixIndex == 10)

            let changed = try await live.put("/api/v1/users/\(viewer.id.uuidString)/scope", bearer: admin.accessToken,
                                             json: #"{"groups":{"trucks":{"grades":[2,7]}}}"#)
            #expect(changed.status == 200)
            #expect(try changed.object()["scope_version"] as? Int == 2)

            let diff = try await stream.collect(2)
            let byKind = Dictionary(uniqueKeysWithValues: diff.map { ($0.event, $0) })
            #expect(Set(diff.map(\.event)) == ["remove", "add"])
            #expect(byKind["remove"]?.deviceID == fleet.van1.id)
            #expect(byKind["remove"]?.id == nil, "scope diffs are not log events and carry no id")
            let added = try #require(byKind["add"])
            #expect(added.deviceID == fleet.truck2.id)
            let position = try #require(try added.object()["position"] as? [String: Any])
            #expect(position.fixIndex == 12, "the add carries truck2's current position (fix 12)")

            try await fleet.postRound(live, from: 20)
            let next = try await stream.next("truck2's live fix")
            #expect(next.event == "location_update")
            #expect(next.deviceID == fleet.truck2.id)
            #expect(try next.object().fixIndex == 22)
            // Nothing else arrived: van fixes 20 and 21 were filtered, and no history was replayed.
            try await live.postPositions(Fixes.object(30), apiKey: fleet.truck2.apiKey, expecting: 1)
            #expect(try await stream.next("truck2's fix 30").object().fixIndex == 30)
        }
    }

    @Test("clearing a scope adds every hidden device; narrowing to nothing removes every visible one")
    func clearAndEmpty() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let viewer = try await live.user(.viewer, in: fleet.tenant, scope: .oneOf(["vans": [5]]))
            let stream = try await live.stream("/api/v1/stream", bearer: viewer.accessToken)
            #expect(try await stream.opening().snapshotDevices == [fleet.van5.id], "explicit mode: grade 5 only")

            #expect(try await live.put("/api/v1/users/\(viewer.id.uuidString)/scope", bearer: admin.accessToken,
                                       json: #"{"groups":null}"#).status == 200)
            let adds = try await stream.collect(2)
            check(adds.allSatisfy { $0.event == "add" })
            #expect(Set(adds.compactMap(\.deviceID)) == [fleet.van1.id, fleet.truck2.id])

            #expect(try await live.put("/api/v1/users/\(viewer.id.uuidString)/scope", bearer: admin.accessToken,
                                       json: #"{"groups":{}}"#).status == 200)
            let removes = try await stream.collect(3)
            check(removes.allSatisfy { $0.event == "remove" })
            #expect(Set(removes.compactMap(\.deviceID)) == Set(fleet.all.map(\.id)))

            // With nothing visible, a fix of every device produces nothing; the next visible event
            // proves it (after widening again, only adds come, no stale updates).
            try await fleet.postRound(live, from: 40)
            #expect(try await live.put("/api/v1/users/\(viewer.id.uuidString)/scope", bearer: admin.accessToken,
                                       json: #"{"groups":{"trucks":{"max_grade":2}}}"#).status == 200)
            let add = try await stream.next("the add of truck2")
            #expect(add.event == "add")
            #expect(add.deviceID == fleet.truck2.id)
            #expect((try add.object()["position"] as? [String: Any])?.fixIndex == 42)
        }
    }

    @Test("every open session of the user applies the change; another user's session does not")
    func allSessionsOfTheUser() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let viewer = try await live.user(.viewer, in: fleet.tenant, scope: .upTo(["vans": 9]))
            let other = try await live.user(.viewer, in: fleet.tenant, scope: .upTo(["vans": 9]))
            let first = try await live.stream("/api/v1/stream", bearer: viewer.accessToken)
            let second = try await live.stream("/api/v1/stream?access_token=\(viewer.accessToken)")
            let unrelated = try await live.stream("/api/v1/stream", bearer: other.accessToken)
            for stream in [first, second, unrelated] {
                #expect(try await stream.opening().snapshotDevices == [fleet.van1.id, fleet.van5.id])
            }

            #expect(try await live.put("/api/v1/users/\(viewer.id.uuidString)/scope", bearer: admin.accessToken,
                                       json: #"{"groups":{"vans":{"max_grade":1}}}"#).status == 200)
            for stream in [first, second] {
                let removed = try await stream.next("the remove of van5")
                #expect(removed.event == "remove")
                #expect(removed.deviceID == fleet.van5.id)
            }
            try await live.postPositions(Fixes.object(50), apiKey: fleet.van5.apiKey, expecting: 1)
            let seen = try await unrelated.next("van5's fix on the unchanged session")
            #expect(seen.event == "location_update", "the other user's scope did not change")
            #expect(seen.deviceID == fleet.van5.id)
            try await live.postPositions(Fixes.object(51), apiKey: fleet.van1.apiKey, expecting: 1)
            for stream in [first, second] {
                let next = try await stream.next("van1's fix")
                #expect(next.deviceID == fleet.van1.id, "van5's fix 50 is out of scope now")
                #expect(try next.object().fixIndex == 51)
            }
        }
    }

    @Test("deleting the user ends their open stream with a closed event")
    func deletedUser() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let viewer = try await live.user(.viewer, in: fleet.tenant)
            let stream = try await live.stream("/api/v1/stream", bearer: viewer.accessToken)
            #expect(try await stream.opening().snapshotDevices.count == 3)
            #expect(try await live.delete("/api/v1/users/\(viewer.id.uuidString)", bearer: admin.accessToken).status == 200)
            let closed = try await stream.next("the closed event")
            #expect(closed.event == "closed")
            #expect(try closed.object()["reason"] as? String == "user_deleted")
            #expect(try await live.get("/api/v1/stream", bearer: viewer.accessToken).status == 401)
        }
    }
}
