import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("positions trigger: doorbell payloads")
struct TriggerDoorbellPayloadTests {
    static func insert(_ rows: Int, booking: String?, device: UUID, client: PostgresClient) async throws {
        try await client.run("""
            INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location)
            SELECT 'acme', \(device), \(booking), now() - (\(rows) - g) * interval '1 second',
                   ST_SetSRID(ST_MakePoint(13.4, 52.5 + g * 0.0001), 4326)::geography
              FROM generate_series(1, \(rows)) AS g
            """)
    }

    @Test("a small batch carries its events inline, identical to the change log rows")
    func inline() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let setup = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme", "pgtrack.booking.trip-1"]) {
                try await Self.insert(3, booking: "trip-1", device: setup.device.id, client: client)
            }
            let log = try await TrackingRepository(client: client, logger: TestCluster.logger).readLog(.tenant(setup.tenant), after: 0)
            #expect(log.map(\.seq) == [1, 2, 3])

            for channel in ["pgtrack.tenant.acme", "pgtrack.booking.trip-1"] {
                let bells = try received.doorbells(channel)
                try #require(bells.count == 1, "\(channel) rang \(bells.count) times")
                let bell = bells[0]
                #expect((bell.first, bell.last, bell.count) == (1, 3, 3))
                #expect(bell.events == log, "the inline events are the logged events, byte for byte")
            }
            #expect(try received.doorbells("pgtrack.booking.trip-1").first?.booking == "trip-1")
            let event = try #require(log.first)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(event.json.utf8)) as? [String: Any])
            #expect(object["seq"] as? Int == 1)
            #expect(object["type"] as? String == "location_update")
            #expect(object["device_id"] as? String == setup.device.id.uuidString.lowercased())
            #expect(object["booking_id"] as? String == "trip-1")
        }
    }

    @Test("a batch over the inline limit carries only the seq range")
    func rangeOnly() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let setup = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            try await Self.insert(2, booking: nil, device: setup.device.id, client: client)
            let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme"]) {
                try await Self.insert(40, booking: nil, device: setup.device.id, client: client)
            }
            let bells = try received.doorbells("pgtrack.tenant.acme")
            try #require(bells.count == 1)
            #expect((bells[0].first, bells[0].last, bells[0].count) == (3, 42, 40))
            #expect(bells[0].events == nil)
            for payload in received.payloads("pgtrack.tenant.acme") {
                #expect(payload.utf8.count < 8_000)
            }
        }
    }

    @Test("rows without a booking ring only the tenant channel")
    func noBooking() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let setup = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme", "pgtrack.booking.trip-1"]) {
                try await Self.insert(5, booking: nil, device: setup.device.id, client: client)
            }
            #expect(received.payloads("pgtrack.tenant.acme").count == 1)
            #expect(received.payloads("pgtrack.booking.trip-1").isEmpty)
        }
    }
}
