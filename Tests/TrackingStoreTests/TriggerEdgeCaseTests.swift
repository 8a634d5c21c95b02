import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("positions trigger: edge cases")
struct TriggerEdgeCaseTests {
    @Test("multi-byte attributes that fit 7,500 characters but not 8,000 bytes ring with the range, not an error")
    func multiByteNotifyPayload() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            // 8 fixes × 500 Cyrillic letters: ~4,000 characters of attributes but ~8,000+ bytes.
            let address = String(repeating: "ж", count: 500)
            let now = Date()
            let batch = (0..<8).map { n in
                ValidatedPosition(latitude: 52.5, longitude: 13.4, fixTime: now.addingTimeInterval(Double(n) - 10),
                                  attributes: ["address": .string(address)])
            }
            let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme"]) {
                _ = try await repository.insertPositions(batch, device: setup.device)
            }
            let bells = try received.doorbells("pgtrack.tenant.acme")
            try #require(bells.count == 1)
            #expect(bells[0].events == nil, "the inline form would exceed pg_notify's 8000-byte limit")
            #expect(try await repository.readLog(.tenant(setup.tenant), after: 0).count == 8)
        }
    }

    @Test("an out-of-order fix is logged with latest=false; the newest with latest=true")
    func latestFlag() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let now = Date()
            _ = try await repository.insertPositions([ValidatedPosition(latitude: 1, longitude: 1, fixTime: now)], device: setup.device)
            _ = try await repository.insertPositions([ValidatedPosition(latitude: 2, longitude: 2, fixTime: now.addingTimeInterval(-30))], device: setup.device)
            // One batch: an older and a newer fix than the stored one; only the newest moves the marker.
            _ = try await repository.insertPositions([
                ValidatedPosition(latitude: 3, longitude: 3, fixTime: now.addingTimeInterval(5)),
                ValidatedPosition(latitude: 4, longitude: 4, fixTime: now.addingTimeInterval(-5)),
            ], device: setup.device)
            let flags = try await repository.readLog(.tenant(setup.tenant), after: 0).map { event in
                let object = try #require(try JSONSerialization.jsonObject(with: Data(event.json.utf8)) as? [String: Any])
                return object["latest"] as? Bool
            }
            #expect(flags == [true, false, true, false])
        }
    }

    @Test("a batch above the inline size rings its tenant by range and its booking's few fixes inline; the booking's log holds exactly them")
    func largeBatchBookingByRange() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let booking = try #require(BookingID("order-7"))
            let now = Date()
            // 20 fixes (above the 16 that go inline), three of them on the booking.
            let batch = (0..<20).map { n in
                ValidatedPosition(latitude: 52.5, longitude: 13.4, fixTime: now.addingTimeInterval(Double(n) - 30),
                                  bookingID: [4, 9, 15].contains(n) ? booking : nil)
            }
            let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme", "pgtrack.booking.order-7"]) {
                _ = try await repository.insertPositions(batch, device: setup.device)
            }
            let tenantBells = try received.doorbells("pgtrack.tenant.acme")
            let bookingBells = try received.doorbells("pgtrack.booking.order-7")
            try #require(tenantBells.count == 1 && bookingBells.count == 1)
            #expect(tenantBells[0].events == nil && tenantBells[0].count == 20)
            let base = tenantBells[0].first - 1  // the tenant's head before the batch
            #expect(bookingBells[0].count == 3 && bookingBells[0].first == base + 5 && bookingBells[0].last == base + 16)
            #expect(bookingBells[0].events?.map(\.seq) == [base + 5, base + 10, base + 16],
                    "the booking's three events go inline although the tenant's twenty do not")
            let logged = try await repository.readLog(.booking(setup.tenant, booking), after: 0)
            #expect(logged.map(\.seq) == [base + 5, base + 10, base + 16])
        }
    }

    @Test("a logged fix's payload is its snapshot JSON plus seq, type and latest, for awkward values too")
    func payloadMatchesPositionJSON() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let now = Date()
            _ = try await repository.insertPositions([
                ValidatedPosition(latitude: 52.123456789, longitude: -13.000000049, fixTime: now.addingTimeInterval(-3),
                                  attributes: ["quote": .string("a \"b\" \\ c\nж"), "nothing": .null,
                                               "nested": .object(["list": .array([.number(1), .null, .bool(false)])])]),
                ValidatedPosition(latitude: 0, longitude: 0, fixTime: now.addingTimeInterval(-2), speed: 0.1, heading: 359.99,
                                  altitude: -12.5, accuracy: 1e-7, battery: 100, bookingID: BookingID("B-1:x.y")),
            ], device: setup.device)
            // Both payloads against the JSON the snapshot and the REST API build for the same row.
            let mismatches = try await client.query("""
                SELECT count(*) FROM change_log c
                  JOIN positions p ON p.device_id = c.device_id AND pgtrack_iso_time(p.fix_time) = c.payload ->> 'timestamp'
                 WHERE c.tenant_id = 'acme' AND c.kind = 'location_update'
                   AND (c.payload - 'seq' - 'type' - 'latest') IS DISTINCT FROM
                       pgtrack_position_json(p.device_id, p.booking_id, p.fix_time, p.received_at, p.location, p.speed,
                                             p.heading, p.altitude, p.accuracy, p.battery, p.attributes)
                """, logger: TestCluster.logger).decode(Int.self).first { _ in true }
            #expect(mismatches == 0)
            let events = try await repository.readLog(.tenant(setup.tenant), after: 0)
            try #require(events.count == 2)
            let first = try #require(try JSONSerialization.jsonObject(with: Data(events[0].json.utf8)) as? [String: Any])
            let attributes = try #require(first["attributes"] as? [String: Any])
            #expect(attributes["quote"] as? String == "a \"b\" \\ c\nж")
            #expect(attributes["nothing"] is NSNull, "a null inside attributes is the device's own value and stays")
            #expect((first["latitude"] as? Double) == 52.1234568 && (first["longitude"] as? Double) == -13.0)
            #expect(first["speed"] == nil && first["booking_id"] == nil, "absent values are left out")
            let second = try #require(try JSONSerialization.jsonObject(with: Data(events[1].json.utf8)) as? [String: Any])
            #expect(second["booking_id"] as? String == "B-1:x.y" && second["accuracy"] as? Double == 1e-7)
            #expect(second["heading"] as? Double == 359.99 && second["battery"] as? Double == 100 && second["latest"] as? Bool == true)
            // A tenant without positions: the snapshot's LEFT JOIN row still builds (no position).
            let empty = try await client.query("""
                SELECT pgtrack_position_json(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::text
                """, logger: TestCluster.logger).decode(String.self).first { _ in true }
            #expect(empty == #"{"attributes": null}"#)
        }
    }
}
