import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Reconnecting with `Last-Event-ID` or `?since=` replays exactly what was missed; an id that
/// cannot be resumed gets a `reset`.
@Suite("SSE: resume and reset", .timeLimit(.minutes(3)))
struct StreamResumeTests {
    @Test("reconnect with Last-Event-ID: K replays the 50 missed events in order, then live ones, no snapshot; ?since=K too")
    func resumeAfterDisconnect() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let first = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await first.opening()
            for n in 0..<20 {
                try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
            }
            let seen = try await first.collect(20)
            check(seen.map(\.seq) == (1...20).map { Int64($0) })
            let k = try #require(seen.last?.seq)
            await first.close()

            for n in 20..<70 {
                try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
            }

            let resumed = try await live.stream("/api/v1/stream", apiKey: setup.apiKey, lastEventID: "\(k)")
            let replay = try await resumed.collect(50)
            check(replay.allSatisfy { $0.event == "location_update" }, "a resumed stream starts with the missed events, not a snapshot")
            check(replay.map(\.seq) == ((k + 1)...(k + 50)).map { $0 })
            check(try replay.map { try $0.object().fixIndex } == (20..<70).map { $0 })

            try await live.postPositions(Fixes.object(70), apiKey: setup.apiKey, expecting: 1)
            let live1 = try await resumed.next("the first live event after the replay")
            #expect(live1.event == "location_update")
            #expect(live1.seq == k + 51)

            // ?since= (and ?api_key=, as a browser's EventSource would send them).
            let since = try await live.stream("/api/v1/stream?since=\(k)&api_key=\(setup.apiKey)")
            let replay2 = try await since.collect(51)
            check(replay2.allSatisfy { $0.event == "location_update" })
            check(replay2.map(\.seq) == ((k + 1)...(k + 51)).map { $0 })
            try await live.postPositions(Fixes.object(71), apiKey: setup.apiKey, expecting: 1)
            #expect(try await since.next("the live event after ?since= replay").seq == k + 52)
            #expect(try await resumed.next("the second live event").seq == k + 52)
        }
    }

    @Test("a booking stream resumed with Last-Event-ID replays only that booking's missed events")
    func resumeBookingStream() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let path = "/api/v1/bookings/trip-1/stream"
            let first = try await live.stream(path, apiKey: setup.apiKey)
            _ = try await first.opening()
            try await live.postPositions(Fixes.array(0..<10, booking: "trip-1"), apiKey: setup.apiKey, expecting: 10)
            let k = try #require(try await first.collect(10).last?.seq)
            #expect(k == 10)
            await first.close()

            // Interleaved: even fixes for trip-1, odd ones for trip-2, then one without a booking.
            for n in 10..<30 {
                try await live.postPositions(Fixes.object(n, booking: n % 2 == 0 ? "trip-1" : "trip-2"),
                                             apiKey: setup.apiKey, expecting: 1)
            }
            try await live.postPositions(Fixes.object(30), apiKey: setup.apiKey, expecting: 1)
            let resumed = try await live.stream(path, apiKey: setup.apiKey, lastEventID: "\(k)")
            let replay = try await resumed.collect(10)
            check(replay.allSatisfy { $0.event == "location_update" })
            check(replay.map(\.seq) == stride(from: k + 1, through: k + 19, by: 2).map { $0 })
            check(try replay.map { try $0.object().fixIndex } == stride(from: 10, to: 30, by: 2).map { $0 })

            try await live.postPositions(Fixes.object(31, booking: "trip-1"), apiKey: setup.apiKey, expecting: 1)
            #expect(try await resumed.next("the live trip-1 event").seq == 32)
        }
    }

    @Test("Last-Event-ID that cannot be resumed starts with a reset, then live events flow",
          arguments: [("abc", "invalid_event_id"), ("999999999", "unknown_event_id")])
    func bogusLastEventID(id: String, reason: String) async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            for n in 0..<3 {
                try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
            }
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey, lastEventID: id)
            let reset = try await stream.next("the reset event")
            #expect(reset.event == "reset")
            let data = try reset.object()
            #expect(data["type"] as? String == "reset")
            #expect(data["reason"] as? String == reason)
            #expect(data["seq"] as? Int == 3)
            #expect(reset.seq == 3)
            let positions = data["positions"] as? [[String: Any]] ?? []
            #expect(positions.count == 1)
            #expect(positions.first?.fixIndex == 2, "the reset carries the latest position")

            try await live.postPositions(Fixes.object(3), apiKey: setup.apiKey, expecting: 1)
            let update = try await stream.next("the live event after the reset")
            #expect(update.event == "location_update")
            #expect(update.seq == 4)
        }
    }
}
