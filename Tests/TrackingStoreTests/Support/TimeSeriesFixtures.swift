import Foundation
import PostgresNIO
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Rows for the time-series tests: fixes written with plain SQL at chosen times, and the
/// from-scratch aggregation the rollups must equal.
enum TimeSeries {
    static let day: TimeInterval = 86_400

    /// Midnight UTC of the day `daysFromToday` away from today.
    static func midnight(_ daysFromToday: Int) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.startOfDay(for: Date()).addingTimeInterval(Double(daysFromToday) * day)
    }

    /// A street-like track: `count` fixes every `step` seconds from `start`, heading east at about
    /// 8 m/s with a stop in the middle (speed 0, metre-scale GPS jitter) and some fixes without a
    /// reported speed. Deterministic for a given seed.
    static func track(device: UUID, start: Date, count: Int, step: TimeInterval = 7, seed: UInt64 = 1,
                      longitude: Double = 13.40, latitude: Double = 52.50) -> [Fix] {
        var random = SeededGenerator(state: seed)
        var lon = longitude
        var fixes: [Fix] = []
        for i in 0..<count {
            let stopped = i > count / 3 && i < count / 2
            if !stopped { lon += 0.00012 }
            let jitter = (Double(random.next() % 1_000) / 1_000 - 0.5) * 0.00004
            let speed: Double? = i % 9 == 0 ? nil : (stopped ? 0 : 7.5 + Double(random.next() % 100) / 100)
            fixes.append(Fix(device: device, time: start.addingTimeInterval(Double(i) * step + Double(random.next() % 1_000) / 1e6),
                             latitude: latitude + jitter, longitude: lon + jitter, speed: speed,
                             heading: stopped ? nil : 90))
        }
        return fixes
    }

    struct Fix: Sendable {
        let device: UUID
        let time: Date
        let latitude: Double
        let longitude: Double
        let speed: Double?
        let heading: Double?
    }

    /// Inserts fixes in one statement, as a SQL writer would.
    static func insert(_ fixes: [Fix], tenant: String = "acme", client: PostgresClient) async throws {
        guard !fixes.isEmpty else { return }
        let values = fixes.map { fix in
            let speed = fix.speed.map { "\($0)" } ?? "NULL"
            let heading = fix.heading.map { "\($0)" } ?? "NULL"
            return "('\(tenant)', '\(fix.device.uuidString.lowercased())', to_timestamp(\(String(format: "%.6f", fix.time.timeIntervalSince1970))), "
                + "ST_SetSRID(ST_MakePoint(\(fix.longitude), \(fix.latitude)), 4326)::geography, \(speed), \(heading))"
        }
        try await client.query(PostgresQuery(unsafeSQL: """
            INSERT INTO positions (tenant_id, device_id, fix_time, location, speed, heading) VALUES
            \(values.joined(separator: ",\n"))
            """), logger: TestCluster.logger)
    }

    /// Rollup rows that differ from an aggregation of the raw points done from scratch in one
    /// query (window over each device's whole history; a segment belongs to its later fix).
    /// Empty when the rollups are exact.
    static func hourlyMismatches(_ client: PostgresClient) async throws -> [String] {
        try await mismatches(client, bucket: "date_trunc('hour', p.fix_time, 'UTC')", table: "rollup_device_hourly", key: "bucket")
    }

    static func dailyMismatches(_ client: PostgresClient) async throws -> [String] {
        try await mismatches(client, bucket: "(p.fix_time AT TIME ZONE 'UTC')::date", table: "rollup_device_daily", key: "day")
    }

    private static func mismatches(_ client: PostgresClient, bucket: String, table: String, key: String) async throws -> [String] {
        let rows = try await client.query(PostgresQuery(unsafeSQL: """
            WITH seg AS (
                SELECT p.tenant_id, p.device_id, \(bucket) AS b, p.fix_time, p.speed, p.location,
                       ST_Distance(lag(p.location) OVER w, p.location) AS d,
                       extract(epoch FROM p.fix_time - lag(p.fix_time) OVER w)::float8 AS dt
                  FROM positions p WHERE p.filter_reason IS NULL  -- rollups leave filtered fixes out
                WINDOW w AS (PARTITION BY p.device_id ORDER BY p.fix_time, p.id)
            ), scratch AS (
                SELECT tenant_id, device_id, b, count(*) AS points, coalesce(sum(d), 0) AS distance,
                       coalesce(sum(dt) FILTER (WHERE dt <= 300 AND coalesce(speed, d / nullif(dt, 0)) >= 1.0), 0) AS moving,
                       coalesce(sum(dt) FILTER (WHERE dt <= 300), 0) AS tracked, max(speed) AS max_speed,
                       count(speed) AS speeds, coalesce(sum(speed), 0) AS speed_sum, min(fix_time) AS first_fix,
                       max(fix_time) AS last_fix, min(ST_Y(location::geometry)) AS min_lat, max(ST_X(location::geometry)) AS max_lon
                  FROM seg GROUP BY 1, 2, 3
            )
            SELECT format('%s %s: scratch %s, rollup %s', coalesce(s.device_id, r.device_id), coalesce(s.b, r.\(key)),
                          row(s.points, s.distance, s.moving, s.tracked, s.max_speed, s.speeds, s.first_fix, s.last_fix, s.min_lat, s.max_lon),
                          row(r.points, r.distance_metres, r.moving_seconds, r.tracked_seconds, r.max_speed, r.speed_count,
                              r.first_fix, r.last_fix, r.min_lat, r.max_lon))
              FROM scratch s
              FULL JOIN \(table) r ON r.tenant_id = s.tenant_id AND r.device_id = s.device_id AND r.\(key) = s.b
             WHERE s.points IS DISTINCT FROM r.points
                OR abs(s.distance - r.distance_metres) > 1e-6 * greatest(1, s.distance)
                OR abs(s.moving - r.moving_seconds) > 1e-6 OR abs(s.tracked - r.tracked_seconds) > 1e-6
                OR s.max_speed IS DISTINCT FROM r.max_speed OR s.speeds IS DISTINCT FROM r.speed_count
                OR abs(s.speed_sum - r.speed_sum) > 1e-6
                OR s.first_fix IS DISTINCT FROM r.first_fix OR s.last_fix IS DISTINCT FROM r.last_fix
                OR s.min_lat IS DISTINCT FROM r.min_lat OR s.max_lon IS DISTINCT FROM r.max_lon
            """), logger: TestCluster.logger)
        var found: [String] = []
        for try await line in rows.decode(String.self) { found.append(line) }
        return found
    }
}
