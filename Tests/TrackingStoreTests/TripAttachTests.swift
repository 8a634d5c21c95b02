import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Fixes without a booking from a device with a running trip belong to that trip, whether the
/// REST ingest attached them itself (pgtrack_ingest_positions) or the row trigger did.
@Suite("positions: attaching fixes to the device's running trip")
struct TripAttachTests {
    @Test("the ingest function attaches its rows; a plain INSERT after it in the same transaction, with the setting set by hand, is still attached by the trigger")
    func ingestThenPlainInsert() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let other = try await repository.createDevice(tenant: setup.tenant, name: "van-2", group: "default", grade: 0).0.id
            try await client.run("SELECT pgtrack_trip_accept('acme', 'trip-1', \(setup.device.id))")
            let now = Date().timeIntervalSince1970
            let rows = #"[{"tenant":"acme","device":"\#(setup.device.id.uuidString)","lat":52.5,"lon":13.4,"t":\#(now - 3),"attributes":{}},"#
                + #"{"tenant":"acme","device":"\#(other.uuidString)","lat":52.5,"lon":13.4,"t":\#(now - 3),"attributes":{}}]"#
            let settingAfter = try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: TestCluster.logger)
                try await connection.query("SELECT pgtrack_ingest_positions(\(rows)::jsonb)", logger: TestCluster.logger)
                let setting = try await connection.query("SELECT current_setting('pgtrack.trips_attached', true)",
                                                         logger: TestCluster.logger).decode(String?.self).first { _ in true }
                // A value set by hand (or left by anything else) does not name this statement.
                try await connection.query("SET LOCAL pgtrack.trips_attached = 'on'", logger: TestCluster.logger)
                try await connection.query("""
                    INSERT INTO positions (tenant_id, device_id, fix_time, location)
                    VALUES ('acme', \(setup.device.id), now() - interval '1 second', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326)::geography)
                    """, logger: TestCluster.logger)
                try await connection.query("COMMIT", logger: TestCluster.logger)
                return setting
            }
            #expect(settingAfter == "", "the ingest function hands the trigger back its job")
            var bookings: [(Bool, String?)] = []
            for try await row in try await client.query("""
                SELECT device_id = \(setup.device.id), booking_id FROM positions ORDER BY id
                """, logger: TestCluster.logger).decode((Bool, String?).self) { bookings.append(row) }
            #expect(bookings.map(\.0) == [true, false, true])
            #expect(bookings.map(\.1) == ["trip-1", nil, "trip-1"], "both fixes of the trip's device belong to it; the other device's to none")
            let points = try await client.value("SELECT point_count FROM trips WHERE booking_id = 'trip-1'", as: Int.self)
            #expect(points == 2)
        }
    }
}
