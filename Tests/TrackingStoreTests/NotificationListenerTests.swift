import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("NotificationListener")
struct NotificationListenerTests {
    /// Runs a listener on `url` for the duration of `body`, then cancels it.
    static func withListener(
        _ url: DatabaseURL, client: PostgresClient, sink: CollectingSink,
        _ body: @Sendable (NotificationListener) async throws -> Void
    ) async throws {
        try await ListenerHarness.run(ListenerHarness.make(url, client: client, sink: sink), on: url, client: client, body)
    }

    static func position(_ n: Int, booking: String? = nil) -> ValidatedPosition {
        ValidatedPosition(latitude: 52.5 + Double(n) * 0.0001, longitude: 13.4, fixTime: Date().addingTimeInterval(Double(n) / 1000 - 60),
                          speed: Double(n % 20), bookingID: booking.flatMap(BookingID.init))
    }

    @Test("a tenant subscriber receives single fixes and batches in seq order, each once")
    func tenantTopic() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let sink = CollectingSink()
            let topic = BusTopic.tenant(setup.tenant)
            try await Self.withListener(url, client: client, sink: sink) { listener in
                _ = try await repository.insertPositions([Self.position(0)], device: setup.device)  // before subscribing
                try await listener.subscribe(topic)
                var n = 1
                for size in [1, 1, 3, 16, 17, 200, 1] {  // inline and range-only doorbells
                    _ = try await repository.insertPositions((0..<size).map { _ in defer { n += 1 }; return Self.position(n) },
                                                             device: setup.device)
                }
                let expected = Array(Int64(2)...Int64(n))  // seq 1 was committed before the subscription
                let complete = await eventually { sink.seqs(of: topic).last == expected.last }
                #expect(complete, "delivered up to \(sink.seqs(of: topic).last ?? 0) of \(n)")
                try await Task.sleep(for: .milliseconds(200))
                #expect(sink.seqs(of: topic) == expected)
                #expect(sink.events(of: topic) == (try await repository.readLog(topic, after: 1)))
            }
        }
    }

    @Test("a booking subscriber receives only that booking's events, in order")
    func bookingTopic() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let sink = CollectingSink()
            let topic = BusTopic.booking(setup.tenant, BookingID("trip-1")!)
            try await Self.withListener(url, client: client, sink: sink) { listener in
                try await listener.subscribe(topic)
                for round in 0..<5 {
                    let batch = (0..<(round == 2 ? 40 : 3)).map { i in Self.position(round * 100 + i, booking: i % 2 == 0 ? "trip-1" : "trip-2") }
                    _ = try await repository.insertPositions(batch, device: setup.device)
                }
                let expected = try await repository.readLog(topic, after: 0).map(\.seq)
                #expect(expected.count == 28, "2 + 2 + 20 + 2 + 2 trip-1 rows")
                let complete = await eventually { sink.seqs(of: topic).last == expected.last }
                #expect(complete)
                try await Task.sleep(for: .milliseconds(200))
                #expect(sink.seqs(of: topic) == expected)
                check(sink.events(of: topic).allSatisfy { $0.json.contains(#""booking_id": "trip-1""#) })
            }
        }
    }

    @Test("killing the listener's connection while positions pour in loses and duplicates nothing")
    func reconnectExactlyOnce() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let sink = CollectingSink()
            let topic = BusTopic.tenant(setup.tenant)
            try await Self.withListener(url, client: client, sink: sink) { listener in
                try await listener.subscribe(topic)
                let stop = Flag()
                try await withThrowingTaskGroup(of: Int.self) { writers in
                    writers.addTask {
                        var n = 0
                        while !stop.isSet && n < 20_000 {
                            let size = n % 7 == 0 ? 25 : 1
                            _ = try await repository.insertPositions((0..<size).map { Self.position(n + $0) }, device: setup.device)
                            n += size
                            try await Task.sleep(for: .milliseconds(5))
                        }
                        return n
                    }
                    for kill in 1...2 {
                        // Counted from here: on a loaded machine a ping that misses its 2 s
                        // deadline reconnects too (a CI run saw two such extra reconnects).
                        let reconnectsBefore = await listener.status.reconnects
                        let before = sink.seqs(of: topic).count
                        let flowing = await eventually { sink.seqs(of: topic).count > before + 20 }
                        #expect(flowing, "events flow before kill \(kill)")
                        let killed = try await client.value("""
                            SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity
                             WHERE application_name = 'pgtrack-listener' AND datname = current_database()
                            """, as: Int.self)
                        #expect(killed >= 1, "the listener connection was found and terminated")
                        let reconnected = await eventually {
                            let status = await listener.status
                            return status.reconnects > reconnectsBefore && status.connected
                        }
                        #expect(reconnected, "listener reconnected after kill \(kill)")
                    }
                    let after = sink.seqs(of: topic).count
                    let flowingAgain = await eventually { sink.seqs(of: topic).count > after + 20 }
                    #expect(flowingAgain, "events flow after the last reconnect")
                    stop.set()
                    let written = try await writers.next() ?? 0
                    #expect(written > 0)
                }
                let head = try #require(try await repository.logBounds(tenant: setup.tenant)).lastSeq
                let complete = await eventually { sink.seqs(of: topic).last == head }
                #expect(complete, "delivered up to \(sink.seqs(of: topic).last ?? 0) of \(head)")
                try await Task.sleep(for: .milliseconds(200))
                let seqs = sink.seqs(of: topic)
                #expect(seqs == Array(1...head), "every seq exactly once, in order (got \(seqs.count) for \(head))")
            }
        }
    }
}
