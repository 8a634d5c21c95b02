import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A raw day compacted before it is dropped keeps every fix: one row per device and hour with
/// the track as a LineString and parallel time/speed/heading arrays.
@Suite("compaction", .timeLimit(.minutes(2)))
struct CompactionTests {
    @Test("compacted hours give back the same times (to the microsecond), coordinates (1e-6°), speeds and headings")
    func roundTrip() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let acme = try await TestTenant.create(repository)
            let (lonely, _) = try await repository.createDevice(tenant: acme.tenant, name: "lonely", group: "default", grade: 0)
            let day = TimeSeries.midnight(-3)
            let fixes = TimeSeries.track(device: acme.device.id, start: day.addingTimeInterval(1_800), count: 900, step: 5)
            let single = TimeSeries.Fix(device: lonely.id, time: day.addingTimeInterval(7_200.123456), latitude: -33.8688197,
                                        longitude: 151.2092955, speed: nil, heading: 359.9)
            try await TimeSeries.insert(fixes + [single], client: client)
            let original = try await Self.points(client, sql: """
                SELECT device_id, extract(epoch FROM fix_time)::float8, ST_Y(location::geometry), ST_X(location::geometry),
                       speed, heading FROM positions ORDER BY device_id, fix_time, id
                """)

            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            let report = try await maintenance.run(now: Date().addingTimeInterval(28 * TimeSeries.day), daysBack: 30, daysAhead: 7)
            let retired = try require(report.retired.first { $0.partition == RetentionTests.name("positions", day) })
            #expect(retired.rows == 901)
            #expect(retired.tracksWritten == 3, "900 fixes every 5 s from 00:30 to 01:45 are two hours, plus the lonely fix")
            #expect(retired.trackBytes > 0 && retired.trackBytes < retired.rawBytes)
            #expect(try await client.value("SELECT count(*) FROM positions", as: Int.self) == 0)

            let restored = try await Self.points(client, sql: """
                SELECT t.device_id, extract(epoch FROM p.fix_time)::float8, p.latitude, p.longitude, p.speed, p.heading
                  FROM position_tracks t CROSS JOIN LATERAL pgtrack_track_points(t.tenant_id, t.device_id, t.bucket) p
                 ORDER BY t.device_id, p.fix_time
                """)
            try #require(restored.count == original.count)
            for (a, b) in zip(original, restored) {
                #expect(a.device == b.device)
                #expect(abs(a.time - b.time) < 1e-6, "time \(a.time) vs \(b.time)")
                #expect(abs(a.latitude - b.latitude) < 1e-6 && abs(a.longitude - b.longitude) < 1e-6)
                #expect(a.speed == b.speed && a.heading == b.heading)
            }
            #expect(try await client.value("""
                SELECT GeometryType(track) FROM position_tracks WHERE device_id = \(lonely.id)
                """, as: String.self) == "POINT")
        }
    }

    @Test("with compact_before_drop off, an expired day is dropped without tracks")
    func compactionCanBeOff() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let acme = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: TimeSeries.midnight(-3), count: 10),
                                        client: client)
            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            try await maintenance.set("compact_before_drop", to: "false")
            _ = try await maintenance.run(now: Date().addingTimeInterval(28 * TimeSeries.day), daysBack: 30, daysAhead: 7)
            #expect(try await client.value("SELECT count(*) FROM positions", as: Int.self) == 0)
            #expect(try await client.value("SELECT count(*) FROM position_tracks", as: Int.self) == 0)
        }
    }

    struct Point { let device: UUID; let time: Double; let latitude: Double; let longitude: Double; let speed: Double?; let heading: Double? }

    static func points(_ client: PostgresClient, sql: String) async throws -> [Point] {
        var points: [Point] = []
        for try await (device, time, lat, lon, speed, heading) in try await client.query(PostgresQuery(unsafeSQL: sql),
                                                                                          logger: TestCluster.logger)
            .decode((UUID, Double, Double, Double, Double?, Double?).self) {
            points.append(Point(device: device, time: time, latitude: lat, longitude: lon, speed: speed, heading: heading))
        }
        return points
    }
}
