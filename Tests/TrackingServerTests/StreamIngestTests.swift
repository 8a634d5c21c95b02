import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Positions written through REST or plain SQL reach SSE subscribers as `location_update` events.
@Suite("SSE: ingest reaches subscribers", .timeLimit(.minutes(3)))
struct StreamIngestTests {
    @Test("REST ingest: a tenant stream gets its snapshot, then the posted fix with id = seq")
    func restToTenantStream() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)

            let snapshot = try await stream.opening()
            #expect(snapshot.seq == 0)
            let snapshotData = try snapshot.object()
            #expect(snapshotData["type"] as? String == "snapshot")
            #expect((snapshotData["positions"] as? [Any])?.isEmpty == true)

            try await live.postPositions(Fixes.object(7), apiKey: setup.apiKey, expecting: 1)
            let update = try await stream.next("the posted fix")
            #expect(update.event == "location_update")
            #expect(update.seq == 1)
            let data = try update.object()
            #expect(data["seq"] as? Int == 1)
            #expect(data["type"] as? String == "location_update")
            #expect(data["device_id"] as? String == setup.device.id.uuidString.lowercased())
            #expect(data["latitude"] as? Double == Fixes.latitude(7))
            #expect(data["longitude"] as? Double == Fixes.longitude(7))
            #expect(data["timestamp"] as? String == Fixes.fixTime(7).iso8601)
            #expect(data.fixIndex == 7)
        }
    }

    @Test("REST ingest: a booking stream gets only that booking's fixes, with booking_id")
    func restToBookingStream() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let stream = try await live.stream("/api/v1/bookings/trip-1/stream", apiKey: setup.apiKey)
            let snapshot = try await stream.opening()
            #expect(snapshot.seq == 0)

            try await live.postPositions(Fixes.object(1, booking: "trip-2"), apiKey: setup.apiKey, expecting: 1)
            try await live.postPositions(Fixes.object(2), apiKey: setup.apiKey, expecting: 1)
            try await live.postPositions(Fixes.object(3, booking: "trip-1"), apiKey: setup.apiKey, expecting: 1)

            let update = try await stream.next("the trip-1 fix")
            #expect(update.event == "location_update")
            #expect(update.seq == 3, "seqs 1 and 2 belong to another booking and to no booking")
            let data = try update.object()
            #expect(data["booking_id"] as? String == "trip-1")
            #expect(data["seq"] as? Int == 3)
            #expect(data["latitude"] as? Double == Fixes.latitude(3))
            #expect(data["longitude"] as? Double == Fixes.longitude(3))
            #expect(data.fixIndex == 3)
        }
    }

    @Test("a plain SQL INSERT on another connection reaches an SSE subscriber")
    func plainSQLInsert() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()

            try await TestDatabase.withConnection(live.databaseURL, applicationName: "pgtrack-test-writer") { connection in
                try await Fixes.insertSQL(42, tenant: setup.tenant, device: setup.device.id, on: connection)
            }

            let update = try await stream.next("the SQL-inserted fix")
            #expect(update.event == "location_update")
            #expect(update.seq == 1)
            let data = try update.object()
            #expect(data["latitude"] as? Double == Fixes.latitude(42))
            #expect(data["longitude"] as? Double == Fixes.longitude(42))
            #expect(data.fixIndex == 42)
        }
    }

    @Test("a batch of 1,000 in one request: 1,000 events, contiguous seqs in array order, one tenant doorbell")
    func thousandBatch() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let channel = BusTopic.tenant(setup.tenant).channel
            try await DoorbellRecorder.listening(on: live.databaseURL, channel: channel) { doorbells in
                let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
                _ = try await stream.opening()

                try await live.postPositions(Fixes.array(0..<1_000), apiKey: setup.apiKey, expecting: 1_000)
                let events = try await stream.collect(1_000)
                check(events.allSatisfy { $0.event == "location_update" })
                check(events.map(\.seq) == (1...1_000).map { Int64($0) }, "seqs must be 1...1000 in order")
                let objects = try events.map { try $0.object() }
                check(objects.map(\.fixIndex) == (0..<1_000).map { $0 }, "events must follow the array order")
                let times = objects.compactMap { $0["timestamp"] as? String }
                check(times == (0..<1_000).map { Fixes.fixTime($0).iso8601 })

                // One more single fix: the next event is exactly it (no duplicate of the batch),
                // and its doorbell proves every earlier doorbell has been recorded.
                try await live.postPositions(Fixes.object(1_000), apiKey: setup.apiKey, expecting: 1)
                let after = try await stream.next("the fix after the batch")
                #expect(after.seq == 1_001)
                try await doorbells.waitFor(seq: 1_001)
                let batchRings = doorbells.all.filter { $0.first <= 1_000 }
                #expect(batchRings.count == 1, "the batch rang \(batchRings.count) times: \(batchRings.map { "\($0.first)...\($0.last)" })")
                if let ring = batchRings.first {
                    #expect(ring.first == 1 && ring.last == 1_000 && ring.count == 1_000)
                }
                #expect(doorbells.unreadable.isEmpty)
            }
        }
    }
}
