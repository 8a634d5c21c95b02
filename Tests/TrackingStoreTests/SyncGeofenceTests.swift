import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Geofences are the synced customers' locations and radii: a change event that moves a
/// customer in the source moves its geofence; a delete removes it.
@Suite("sync: customer geofences follow the source", .timeLimit(.minutes(2)))
struct SyncGeofenceTests {
    @Test("a point inside the geofence finds the customer; after the customer moves it does not, the new spot does; a delete removes it")
    func geofenceFollowsTheCustomer() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            try await TrackingRepository(client: client, logger: TestCluster.logger).createTenant(id: TenantID("acme")!, name: "Acme")
            let shop = (lat: 52.5163, lon: 13.3777)
            let moved = (lat: 52.5300, lon: 13.4000)
            try await Self.apply(client, op: "c", lsn: 100, after: #"{"id":42,"name":"Shop","latitude":52.5163,"longitude":13.3777,"geofence_radius_m":80}"#)
            // 50 m north of the shop: inside 80 m. 120 m north: outside.
            #expect(try await Self.fences(client, lat: shop.lat + 50 / 111_320, lon: shop.lon) == ["42"])
            #expect(try await Self.fences(client, lat: shop.lat + 120 / 111_320, lon: shop.lon) == [])
            // Another tenant's point query never sees acme's customers.
            #expect(try await Self.fences(client, lat: shop.lat, lon: shop.lon, tenant: "globex") == [])

            try await Self.apply(client, op: "u", lsn: 200, after: #"{"id":42,"name":"Shop","latitude":52.53,"longitude":13.4,"geofence_radius_m":80}"#)
            #expect(try await Self.fences(client, lat: shop.lat, lon: shop.lon) == [], "the old spot is no longer fenced")
            #expect(try await Self.fences(client, lat: moved.lat, lon: moved.lon) == ["42"])

            // Without a radius the default (100 m) applies.
            try await Self.apply(client, op: "u", lsn: 300, after: #"{"id":42,"name":"Shop","latitude":52.53,"longitude":13.4}"#)
            #expect(try await Self.fences(client, lat: moved.lat + 90 / 111_320, lon: moved.lon) == ["42"])
            #expect(try await Self.fences(client, lat: moved.lat + 110 / 111_320, lon: moved.lon) == [])

            try await Self.apply(client, op: "d", lsn: 400, before: #"{"id":42}"#)
            #expect(try await Self.fences(client, lat: moved.lat, lon: moved.lon) == [], "a deleted customer has no geofence")
        }
    }

    static func apply(_ client: PostgresClient, op: String, lsn: Int, after: String? = nil, before: String? = nil) async throws {
        let event = """
            {"op":"\(op)","before":\(before ?? "null"),"after":\(after ?? "null"),
             "source":{"connector":"postgresql","table":"customers","ts_ms":\(1_763_900_000_000 + lsn),"lsn":\(lsn)}}
            """
        let rows = try await client.query("SELECT pgtrack_sync_apply('acme', \(event)::jsonb)", logger: TestCluster.logger)
        for try await outcome in rows.decode(String.self) { #expect(outcome == "applied", "\(event)") }
    }

    static func fences(_ client: PostgresClient, lat: Double, lon: Double, tenant: String = "acme") async throws -> [String] {
        let rows = try await client.query("""
            SELECT customer_id FROM pgtrack_customer_geofences_at(\(tenant),
                ST_SetSRID(ST_MakePoint(\(lon)::float8, \(lat)::float8), 4326)::geography)
            """, logger: TestCluster.logger)
        var ids: [String] = []
        for try await id in rows.decode(String.self) { ids.append(id) }
        return ids
    }
}
