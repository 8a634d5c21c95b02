import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Bus rule 7: a multi-row INSERT through plain SQL is set-based work in the trigger and one
/// NOTIFY per channel it touches.
@Suite("positions trigger: one 1,000-row INSERT")
struct TriggerBatchTests {
    @Test("logs 1,000 contiguous seqs in id order, advances the head once and rings each channel once")
    func thousandRows() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let setup = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let device = setup.device.id
            let channels = ["pgtrack.tenant.acme", "pgtrack.booking.book-a", "pgtrack.booking.book-b"]

            let received = try await recordNotifications(on: url, channels: channels) {
                try await client.run("""
                    INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location, speed, attributes)
                    SELECT 'acme', \(device), CASE WHEN g % 2 = 0 THEN 'book-a' ELSE 'book-b' END,
                           now() - (1000 - g) * interval '1 second',
                           ST_SetSRID(ST_MakePoint(13.4 + g * 0.0001, 52.5), 4326)::geography,
                           g % 30, jsonb_build_object('g', g)
                      FROM generate_series(1, 1000) AS g
                    """)
            }

            // The log: one row per position, seqs 1...1000, in the order of the positions' ids.
            let seqs = try await client.value("SELECT array_agg(seq ORDER BY seq) FROM change_log WHERE tenant_id = 'acme'", as: [Int64].self)
            #expect(seqs == Array(1...1000))
            let idsInSeqOrder = try await client.value("""
                SELECT array_agg(p.id ORDER BY c.seq)
                  FROM change_log c JOIN positions p ON (p.attributes->>'g') = (c.payload->'attributes'->>'g')
                 WHERE c.tenant_id = 'acme'
                """, as: [Int64].self)
            #expect(idsInSeqOrder.count == 1000)
            #expect(idsInSeqOrder == idsInSeqOrder.sorted())
            #expect(Set(idsInSeqOrder).count == 1000)
            let payloadSeqsMatch = try await client.value(
                "SELECT bool_and((payload->>'seq')::bigint = seq AND kind = 'location_update') FROM change_log", as: Bool.self)
            #expect(payloadSeqsMatch)
            #expect(try await client.value("SELECT last_seq FROM change_log_heads WHERE tenant_id = 'acme'", as: Int64.self) == 1000)

            // The latest position is the newest fix (g = 1000), carrying its seq.
            let latest = try await client.value(
                "SELECT (attributes->>'g')::int4 FROM latest_positions WHERE device_id = \(device)", as: Int32.self)
            #expect(latest == 1000)

            // One doorbell per channel touched.
            #expect(received.payloads("pgtrack.tenant.acme").count == 1)
            #expect(received.payloads("pgtrack.booking.book-a").count == 1)
            #expect(received.payloads("pgtrack.booking.book-b").count == 1)

            let tenantBell = try #require(try received.doorbells("pgtrack.tenant.acme").first)
            #expect(tenantBell.tenant == "acme")
            #expect(tenantBell.booking == nil)
            #expect((tenantBell.first, tenantBell.last, tenantBell.count) == (1, 1000, 1000))
            #expect(tenantBell.events == nil, "1,000 events cannot be inlined")

            let a = try #require(try received.doorbells("pgtrack.booking.book-a").first)
            let b = try #require(try received.doorbells("pgtrack.booking.book-b").first)
            #expect((a.booking, a.count, a.first, a.last) == ("book-a", 500, 2, 1000))
            #expect((b.booking, b.count, b.first, b.last) == ("book-b", 500, 1, 999))
            #expect(a.tenant == "acme" && b.tenant == "acme")
        }
    }
}
