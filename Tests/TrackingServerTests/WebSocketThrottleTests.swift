import Foundation
import NIOWebSocket
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The per-device broadcast throttle (`minBroadcastInterval`): every fix is stored and logged,
/// but a subscriber gets at most one location update per device per interval, the first at once
/// and the newest held one when the interval has passed (latest wins). SSE and WebSocket alike.
@Suite("Throttle: per-device broadcast interval on SSE and WebSocket", .timeLimit(.minutes(3)))
struct WebSocketThrottleTests {
    /// Posts fixes `range` one per request, request k started `spacing * k` after the first.
    /// Returns how long the burst took, from the first request to the last answer.
    static func burst(_ live: LiveNode, _ range: Range<Int>, apiKeys: [String], spacing: Duration = .milliseconds(80)) async throws -> Duration {
        let start = ContinuousClock.now
        for (k, n) in range.enumerated() {
            try await Task.sleep(until: start + spacing * k, clock: .continuous)
            try await live.postPositions(Fixes.object(n), apiKey: apiKeys[k % apiKeys.count], expecting: 1)
        }
        return ContinuousClock.now - start
    }

    static func positionCount(_ live: LiveNode) async throws -> Int {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            try await Fixes.count("SELECT count(*)::int FROM positions", on: connection)
        }
    }

    @Test("10 fixes ~80 ms apart, 1 s interval: SSE and a WebSocket tenant room get exactly the first and the last; all 10 are stored")
    func firstAndLast() async throws {
        try await LiveNode.run({ $0.minBroadcastInterval = .seconds(1) }) { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let sse = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
                let opened = try #require(try await sse.opening().seq)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                #expect(try await socket.joinRoom("tenant:acme").seq == opened)

                let took = try await Self.burst(live, 0..<10, apiKeys: [setup.apiKey])
                #expect(try await Self.positionCount(live) == 10, "the throttle never touches storage")

                if took < .milliseconds(900) {
                    // The whole burst fell in one interval: first at once, the last one held.
                    let sseEvents = try await sse.collect(2)
                    #expect(sseEvents.map(\.event) == ["location_update", "location_update"])
                    check(try sseEvents.map { try $0.object().fixIndex } == [0, 9], "first and last of the burst")
                    #expect(sseEvents[0].seq == opened + 1, "the first goes at once, with its id")
                    #expect(sseEvents[1].id == nil, "the held update released late carries no SSE id: \(sseEvents[1])")
                    #expect(try sseEvents[1].object()["seq"] as? Int == Int(opened) + 10, "but its data has its seq")
                    let last = try sseEvents[1].object()
                    check((last["latitude"] as? Double).map { abs($0 - Fixes.latitude(9)) < 1e-7 } == true, "\(last)")
                    check((last["longitude"] as? Double).map { abs($0 - Fixes.longitude(9)) < 1e-7 } == true, "\(last)")

                    let wsEvents = try await socket.collect(2)
                    #expect(wsEvents.map(\.fixIndex) == [0, 9], "\(wsEvents)")
                    #expect(wsEvents.map(\.seq) == [opened + 1, opened + 10])
                    check(wsEvents.allSatisfy { $0.type == "location_update" && $0.room == "tenant:acme" })
                    let wsLast = wsEvents[1].object
                    check((wsLast["latitude"] as? Double).map { abs($0 - Fixes.latitude(9)) < 1e-7 } == true, "\(wsLast)")
                } else {
                    // A machine too slow to post 10 fixes inside the interval: the throttle still
                    // sends the first at once and the last eventually, and never more than one per
                    // interval (plus the first and the held last).
                    let limit = 2 + Int(took / .seconds(1))
                    for indices in [try await Self.sseUpTo(9, sse), try await Self.wsUpTo(9, socket)] {
                        #expect(indices.first == 0 && indices.last == 9, "\(indices)")
                        #expect(indices.count <= limit, "at most one per interval over \(took): \(indices)")
                        #expect(indices == indices.sorted())
                    }
                }

                // Nothing else is pending: the next fix is the next event on both.
                try await live.postPositions(Fixes.object(10), apiKey: setup.apiKey, expecting: 1)
                #expect(try await sse.next("fix 10").object().fixIndex == 10)
                #expect(try await socket.next("fix 10").fixIndex == 10)

                // The log keeps every fix: a resume replays all of them.
                let replay = try await live.stream("/api/v1/stream", apiKey: setup.apiKey, lastEventID: "\(opened)")
                check(try await replay.collect(11).map { try $0.object().fixIndex } == Array(0...10))
                let resumed = try await ws.open("/ws", apiKey: setup.apiKey)
                try await resumed.resume("tenant:acme", since: opened)
                _ = try await resumed.expect("joined")
                #expect(try await resumed.collect(11).map(\.fixIndex) == Array(0...10))
            }
        }
    }

    static func sseUpTo(_ last: Int, _ stream: SSEStream) async throws -> [Int] {
        var indices: [Int] = []
        while indices.last != last { indices.append(try #require(try await stream.next().object().fixIndex)) }
        return indices
    }

    static func wsUpTo(_ last: Int, _ socket: WSConnection) async throws -> [Int] {
        var indices: [Int] = []
        while indices.last != last { indices.append(try #require(try await socket.next().fixIndex)) }
        return indices
    }

    @Test("without a throttle all 10 arrive, each with its id and seq")
    func noThrottle() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let sse = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
                let opened = try #require(try await sse.opening().seq)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                try await socket.joinRoom("tenant:acme")
                _ = try await Self.burst(live, 0..<10, apiKeys: [setup.apiKey])
                let sseEvents = try await sse.collect(10)
                check(try sseEvents.map { try $0.object().fixIndex } == Array(0..<10))
                check(sseEvents.map(\.seq) == (1...10).map { opened + Int64($0) })
                let wsEvents = try await socket.collect(10)
                #expect(wsEvents.map(\.fixIndex) == Array(0..<10))
                check(wsEvents.map(\.seq) == (1...10).map { opened + Int64($0) })
                try await socket.expectQuiet("exactly 10")
            }
        }
    }

    @Test("the throttle is per device: two devices interleaved in one burst each get their first and their last")
    func perDevice() async throws {
        try await LiveNode.run({ $0.minBroadcastInterval = .seconds(1) }) { live in
            try await live.withSockets { ws in
                let fleet = try await ScopedFleet.create(live)  // fixes 1, 2, 3
                let admin = try await live.user(.admin, in: fleet.tenant)
                let socket = try await ws.open("/ws", bearer: admin.accessToken)
                try await socket.joinRoom("tenant:acme")
                // Even fixes from van1, odd ones from van5.
                let took = try await Self.burst(live, 10..<20, apiKeys: [fleet.van1.apiKey, fleet.van5.apiKey], spacing: .milliseconds(60))
                guard took < .milliseconds(900) else { return }  // too slow a machine to say anything exact
                let events = try await socket.collect(4)
                let byDevice = Dictionary(grouping: events, by: { $0.deviceID ?? "?" }).mapValues { $0.map(\.fixIndex) }
                #expect(byDevice[fleet.van1.id] == [10, 18], "\(events)")
                #expect(byDevice[fleet.van5.id] == [11, 19], "\(events)")
                #expect(Array(events.map(\.fixIndex).prefix(2)) == [10, 11], "the first of each device at once")
                let seqs = events.compactMap(\.seq)
                #expect(seqs == seqs.sorted(), "held ones are released in seq order: \(events)")
                try await socket.expectQuiet("nothing else")
            }
        }
    }

    @Test("a trip's final status first releases the held update: the trip socket gets the last fix, then completed, then closes")
    func statusReleasesHeldUpdate() async throws {
        try await LiveNode.run({ $0.minBroadcastInterval = .seconds(1) }) { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let admin = try await live.user(.admin, in: setup.tenant)
                #expect(try await TripAPI.accept(live, "bk-1", apiKey: setup.apiKey).status == 201)
                let socket = try await ws.open("/ws/tracking/bk-1", bearer: admin.accessToken)
                _ = try await socket.expect("joined")
                _ = try await socket.expect("snapshot")
                _ = try await socket.expect("status")
                for n in 0..<4 {
                    try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
                }
                #expect(try await TripAPI.complete(live, "bk-1", bearer: admin.accessToken).status == 200)
                _ = try await socket.closed()
                let messages = socket.inbox.untaken
                let updates = messages.filter { $0.type == "location_update" }.compactMap(\.fixIndex)
                #expect(updates.first == 0 && updates.last == 3, "the first fix and the newest one arrive: \(messages)")
                #expect(updates == updates.sorted() && Set(updates).count == updates.count, "\(messages)")
                #expect(messages.last?.status == "completed", "the final status is last: \(messages)")
                check(messages.filter { $0.type == "status" }.map(\.status) == ["in_progress", "completed"], "\(messages)")
                #expect(try await Self.positionCount(live) == 4)
            }
        }
    }

    @Test("a batch of 10 in one request: the subscriber gets the first at once and the last after the interval")
    func batch() async throws {
        try await LiveNode.run({ $0.minBroadcastInterval = .seconds(1) }) { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let sse = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
                let opened = try #require(try await sse.opening().seq)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                try await socket.joinRoom("tenant:acme")
                try await live.postPositions(Fixes.array(0..<10), apiKey: setup.apiKey, expecting: 10)
                let sseEvents = try await sse.collect(2)
                check(try sseEvents.map { try $0.object().fixIndex } == [0, 9])
                #expect(sseEvents.map(\.id) == ["\(opened + 1)", nil])
                let wsEvents = try await socket.collect(2)
                #expect(wsEvents.map(\.fixIndex) == [0, 9])
                #expect(wsEvents.map(\.seq) == [opened + 1, opened + 10])
                #expect(try await Self.positionCount(live) == 10)
                try await live.postPositions(Fixes.object(10), apiKey: setup.apiKey, expecting: 1)
                #expect(try await sse.next("fix 10").object().fixIndex == 10)
                #expect(try await socket.next("fix 10").fixIndex == 10)
            }
        }
    }

    @Test("a held update the client already has from a resume replay is not sent again")
    func heldUpdateNotDuplicatedAfterResume() async throws {
        try await LiveNode.run({ $0.minBroadcastInterval = .seconds(1) }) { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                let opened = try #require(try await socket.joinRoom("tenant:acme").seq)
                try await live.postPositions(Fixes.array(0..<10), apiKey: setup.apiKey, expecting: 10)
                let first = try await socket.next("the first of the batch")
                #expect(first.fixIndex == 0 && first.seq == opened + 1)
                // Fix 9 is held for about a second; resuming now replays 1…9 from the log.
                try await socket.resume("tenant:acme", since: opened + 1)
                try await Task.sleep(for: .milliseconds(1_500))  // past the release of the held update
                let messages = try await socket.drain("after the release")
                let beforeJoin = Array(messages.prefix { $0.type != "joined" })
                let afterJoin = Array(messages.drop { $0.type != "joined" }.dropFirst())
                // The held update may go out before the resume is handled (a slow machine); after
                // the joined, each seq comes exactly once.
                check(beforeJoin.allSatisfy { $0.fixIndex == 9 }, "\(beforeJoin)")
                check(afterJoin.map(\.seq) == (2...10).map { opened + Int64($0) }, "\(afterJoin)")
                #expect(afterJoin.map(\.fixIndex) == Array(1...9))
            }
        }
    }
}
