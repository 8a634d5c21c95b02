import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// One waypoint a test posts: its time, where it is, what the device reports, and whether the
/// device was really moving (false while parked, where only GPS noise moves it).
struct TrackPoint: Sendable {
    var time: Date
    var latitude: Double
    var longitude: Double
    var speed: Double?
    var heading: Double?
    var altitude: Double? = nil
    var moving: Bool = true

    /// The position body as `POST /api/v1/locations` takes it. Coordinates are written with at
    /// most 9 decimals, exactly as given to the generator.
    func json(booking: String? = nil) -> String {
        var fields: [String: String?] = [
            "latitude": Self.number(latitude, 9),
            "longitude": Self.number(longitude, 9),
            "timestamp": "\"\(time.iso8601)\"",
            "speed": speed.map { Self.number($0, 2) },
            "heading": heading.map { Self.number($0, 1) },
            "altitude": altitude.map { Self.number($0, 1) },
        ]
        if let booking { fields["booking_id"] = "\"\(booking)\"" }
        return Fixes.object(fields)
    }

    static func number(_ value: Double, _ places: Int) -> String {
        String(format: "%.\(places)f", value)
    }

    static func array(_ points: some Collection<TrackPoint>, booking: String? = nil) -> String {
        "[" + points.map { $0.json(booking: booking) }.joined(separator: ",") + "]"
    }
}

/// The trips tests' name for the shared seeded generator.
typealias SplitMix64 = SeededGenerator

/// Generates a realistic track around Berlin: driving at ~8 m/s along curves, one fix per second,
/// with stationary spells where only GPS noise moves the fix.
struct TrackBuilder {
    static let metresPerDegreeLatitude = 111_195.0

    let start: Date
    var latitude: Double
    var longitude: Double
    var heading: Double  // degrees from north
    var points: [TrackPoint] = []
    var random: SplitMix64
    /// Parked windows as (first index, last index) into `points`.
    var parked: [(Int, Int)] = []

    init(start: Date, latitude: Double = 52.52, longitude: Double = 13.405, heading: Double = 60, seed: UInt64 = 42) {
        self.start = start
        self.latitude = latitude
        self.longitude = longitude
        self.heading = heading
        self.random = SplitMix64(state: seed)
    }

    var metresPerDegreeLongitude: Double { Self.metresPerDegreeLatitude * cos(latitude * .pi / 180) }
    private var nextTime: Date { start.addingTimeInterval(Double(points.count)) }

    /// `seconds` fixes while driving: each second the heading turns by `turn` degrees and the
    /// device moves by `speed(k)` metres (k counts from 0), with ±`noise` metres of GPS error.
    mutating func drive(_ seconds: Int, turn: Double, noise: Double = 0.3, speed: (Int) -> Double = { _ in 8 }) {
        for k in 0..<seconds {
            let v = (speed(k) * 100).rounded() / 100
            heading = (heading + turn).truncatingRemainder(dividingBy: 360)
            if heading < 0 { heading += 360 }
            let radians = heading * .pi / 180
            latitude += v * cos(radians) / Self.metresPerDegreeLatitude
            longitude += v * sin(radians) / metresPerDegreeLongitude
            let lat = latitude + noise * random.signed() / Self.metresPerDegreeLatitude
            let lon = longitude + noise * random.signed() / metresPerDegreeLongitude
            points.append(TrackPoint(time: nextTime, latitude: lat, longitude: lon, speed: v, heading: (heading * 10).rounded() / 10))
        }
    }

    /// `seconds` fixes standing still, each off by up to ±`noise` metres north and east.
    mutating func park(_ seconds: Int, noise: Double = 3) {
        let first = points.count
        for _ in 0..<seconds {
            let lat = latitude + noise * random.signed() / Self.metresPerDegreeLatitude
            let lon = longitude + noise * random.signed() / metresPerDegreeLongitude
            let reported = (abs(random.signed()) * 40).rounded() / 100
            points.append(TrackPoint(time: nextTime, latitude: lat, longitude: lon, speed: reported, heading: nil, moving: false))
        }
        parked.append((first, points.count - 1))
    }

    /// The points with coordinates rounded to 9 decimals (what the JSON carries), the first and
    /// last rounded to 6 so exports that round to 6 decimals reproduce them exactly.
    func finished() -> [TrackPoint] {
        var result = points
        for index in result.indices {
            let places = index == 0 || index == result.count - 1 ? 1e6 : 1e9
            result[index].latitude = (result[index].latitude * places).rounded() / places
            result[index].longitude = (result[index].longitude * places).rounded() / places
        }
        return result
    }
}

/// A base time for pinned fix timestamps: a few hours ago, in whole seconds, so every fix of a
/// test lies in the past and inside the partitions that exist.
enum TripClock {
    static func base(hoursAgo: Double = 3) -> Date {
        Date(timeIntervalSince1970: (Date().timeIntervalSince1970 - hoursAgo * 3_600).rounded(.down))
    }
}

/// Calls of the trip API, with the replies decoded where a test needs them.
enum TripAPI {
    static func accept(_ live: LiveNode, _ booking: String, apiKey: String? = nil, bearer: String? = nil,
                       device: String? = nil) async throws -> LiveNode.Reply {
        try await live.post("/api/v1/bookings/\(booking)/accept", apiKey: apiKey, bearer: bearer,
                            json: device.map { #"{"device_id":"\#($0)"}"# } ?? "")
    }

    static func complete(_ live: LiveNode, _ booking: String, apiKey: String? = nil, bearer: String? = nil) async throws -> LiveNode.Reply {
        try await live.post("/api/v1/bookings/\(booking)/complete", apiKey: apiKey, bearer: bearer, json: "")
    }

    static func cancel(_ live: LiveNode, _ booking: String, apiKey: String? = nil, bearer: String? = nil) async throws -> LiveNode.Reply {
        try await live.post("/api/v1/bookings/\(booking)/cancel", apiKey: apiKey, bearer: bearer, json: "")
    }

    static func events(_ live: LiveNode, _ json: String, apiKey: String? = nil, bearer: String? = nil) async throws -> LiveNode.Reply {
        try await live.post("/api/v1/events", apiKey: apiKey, bearer: bearer, json: json)
    }

    /// `GET /api/v1/tracking/{booking}`, required to answer 200.
    static func trip(_ live: LiveNode, _ booking: String, apiKey: String? = nil, bearer: String? = nil,
                     sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String: Any] {
        let reply = try await live.get("/api/v1/tracking/\(booking)", apiKey: apiKey, bearer: bearer)
        try #require(reply.status == 200, "GET tracking/\(booking): \(reply.status) \(reply.body.prefix(300))",
                     sourceLocation: sourceLocation)
        return try reply.object()
    }

    /// Posts `points` in requests of `batch` and requires each to be accepted.
    static func post(_ live: LiveNode, _ points: [TrackPoint], apiKey: String, batch: Int = 50, booking: String? = nil) async throws {
        var offset = 0
        while offset < points.count {
            let slice = points[offset..<min(points.count, offset + batch)]
            try await live.postPositions(TrackPoint.array(slice, booking: booking), apiKey: apiKey, expecting: slice.count)
            offset += batch
        }
    }

    /// A 409 with `current_status`.
    static func expectConflict(_ reply: LiveNode.Reply, currentStatus: String?, index: Int? = nil, _ comment: Comment,
                               sourceLocation: SourceLocation = #_sourceLocation) {
        ValidationTests.expectError(reply, status: 409, code: "conflict", index: index, comment, sourceLocation: sourceLocation)
        let error = (try? reply.error()) ?? [:]
        #expect(error["current_status"] as? String == currentStatus, "\(comment): \(error)", sourceLocation: sourceLocation)
    }
}

/// Direct SQL on the test database (as its owner: no row-level security in the way).
enum TripSQL {
    static func withConnection<T: Sendable>(_ live: LiveNode, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await TestDatabase.withConnection(live.databaseURL, body)
    }

    /// The stored positions of a device in (fix_time, id) order: booking id and fix time.
    static func bookings(_ live: LiveNode, device: UUID) async throws -> [(booking: String?, time: Date)] {
        try await withConnection(live) { connection in
            var rows: [(String?, Date)] = []
            let query: PostgresQuery = "SELECT booking_id, fix_time FROM positions WHERE device_id = \(device) ORDER BY fix_time, id"
            for try await row in try await connection.query(query, logger: TestCluster.logger).decode((String?, Date).self) {
                rows.append(row)
            }
            return rows.map { (booking: $0.0, time: $0.1) }
        }
    }

    /// How many events of `kind` the tenant's change log holds for `booking`.
    static func logged(_ live: LiveNode, kind: String, booking: String, tenant: String = "acme") async throws -> Int {
        try await withConnection(live) { connection in
            try await Fixes.count("""
                SELECT count(*)::int FROM change_log WHERE tenant_id = \(tenant) AND kind = \(kind) AND booking_id = \(booking)
                """, on: connection)
        }
    }

    /// The `status` values of the booking's status events, in seq order.
    static func statusEvents(_ live: LiveNode, booking: String, tenant: String = "acme") async throws -> [String] {
        try await withConnection(live) { connection in
            var statuses: [String] = []
            let query: PostgresQuery = """
                SELECT payload->>'status' FROM change_log
                 WHERE tenant_id = \(tenant) AND kind = 'status' AND booking_id = \(booking) ORDER BY seq
                """
            for try await status in try await connection.query(query, logger: TestCluster.logger).decode(String.self) {
                statuses.append(status)
            }
            return statuses
        }
    }

    /// A trip's metadata recomputed from its stored points by the rules of the issue, in SQL:
    /// a recursive walk in (fix_time, id) order with the anchor rule for distance and the spell
    /// rule for stops, plus plain aggregates for the rest.
    struct Recomputed: Sendable {
        var count: Int
        var distance: Double
        var first: Date
        var last: Date
        var minLat: Double, minLon: Double, maxLat: Double, maxLon: Double
        var maxSpeed: Double?
        /// Finished stops as (start, end) epoch seconds.
        var stops: [(start: Double, end: Double)]
        /// The spell open after the last point.
        var spellSince: Date
        /// ST_Length of the line through every point (jitter included).
        var rawLength: Double
    }

    static func recompute(_ live: LiveNode, tenant: String = "acme", booking: String, device: UUID,
                          jitter: Double, radius: Double, stopSeconds: Int) async throws -> Recomputed {
        try await withConnection(live) { connection in
            let walk: PostgresQuery = """
                WITH RECURSIVE pts AS MATERIALIZED (
                    SELECT row_number() OVER (ORDER BY fix_time, id) AS rn, fix_time, location
                      FROM positions
                     WHERE tenant_id = \(tenant) AND booking_id = \(booking) AND device_id = \(device)
                ), walk AS (
                    SELECT rn, location AS anchor, 0::float8 AS distance, location AS spell, fix_time AS since,
                           fix_time AS last_time, '[]'::jsonb AS stops
                      FROM pts WHERE rn = 1
                    UNION ALL
                    SELECT p.rn,
                           CASE WHEN ST_Distance(w.anchor, p.location) >= \(jitter)::float8 THEN p.location ELSE w.anchor END,
                           w.distance + CASE WHEN ST_Distance(w.anchor, p.location) >= \(jitter)::float8
                                             THEN ST_Distance(w.anchor, p.location) ELSE 0 END,
                           CASE WHEN ST_Distance(w.spell, p.location) > \(radius)::float8 THEN p.location ELSE w.spell END,
                           CASE WHEN ST_Distance(w.spell, p.location) > \(radius)::float8 THEN p.fix_time ELSE w.since END,
                           p.fix_time,
                           w.stops || CASE WHEN ST_Distance(w.spell, p.location) > \(radius)::float8
                                                AND extract(epoch FROM w.last_time - w.since) >= \(Double(stopSeconds))::float8
                                           THEN jsonb_build_array(jsonb_build_array(extract(epoch FROM w.since)::float8,
                                                                                    extract(epoch FROM w.last_time)::float8))
                                           ELSE '[]'::jsonb END
                      FROM walk w JOIN pts p ON p.rn = w.rn + 1
                )
                SELECT distance, stops::text, since FROM walk ORDER BY rn DESC LIMIT 1
                """
            var distance = 0.0
            var stopsText = "[]"
            var since = Date.distantPast
            for try await (d, s, t) in try await connection.query(walk, logger: TestCluster.logger).decode((Double, String, Date).self) {
                distance = d
                stopsText = s
                since = t
            }
            let stopsArray = (try JSONSerialization.jsonObject(with: Data(stopsText.utf8)) as? [[Double]]) ?? []

            let aggregates: PostgresQuery = """
                SELECT count(*)::int, min(fix_time), max(fix_time),
                       min(ST_Y(location::geometry)), min(ST_X(location::geometry)),
                       max(ST_Y(location::geometry)), max(ST_X(location::geometry)), max(speed),
                       ST_Length(ST_MakeLine(location::geometry ORDER BY fix_time, id)::geography)
                  FROM positions WHERE tenant_id = \(tenant) AND booking_id = \(booking) AND device_id = \(device)
                """
            var result: Recomputed?
            for try await row in try await connection.query(aggregates, logger: TestCluster.logger)
                .decode((Int, Date, Date, Double, Double, Double, Double, Double?, Double).self) {
                result = Recomputed(count: row.0, distance: distance, first: row.1, last: row.2, minLat: row.3, minLon: row.4,
                                    maxLat: row.5, maxLon: row.6, maxSpeed: row.7,
                                    stops: stopsArray.map { (start: $0[0], end: $0[1]) }, spellSince: since, rawLength: row.8)
            }
            guard let result else { throw NoTripRow(what: "aggregates of \(booking)") }
            return result
        }
    }

    /// ST_Length (geodesic metres) of the line through the booking's points whose fix time is
    /// outside every window in `excluding` (closed intervals).
    static func lineLength(_ live: LiveNode, tenant: String = "acme", booking: String, excluding windows: [(Date, Date)]) async throws -> Double {
        try await withConnection(live) { connection in
            let bounds = windows.flatMap { [$0.0.timeIntervalSince1970, $0.1.timeIntervalSince1970] }
            let query: PostgresQuery = """
                SELECT coalesce(ST_Length(ST_MakeLine(p.location::geometry ORDER BY p.fix_time, p.id)::geography), 0)
                  FROM positions p
                 WHERE p.tenant_id = \(tenant) AND p.booking_id = \(booking)
                   AND NOT EXISTS (SELECT 1 FROM generate_series(1, cardinality(\(bounds)::float8[]) / 2) k
                                    WHERE extract(epoch FROM p.fix_time) BETWEEN (\(bounds)::float8[])[2 * k - 1]
                                                                             AND (\(bounds)::float8[])[2 * k])
                """
            for try await length in try await connection.query(query, logger: TestCluster.logger).decode(Double.self) {
                return length
            }
            throw NoTripRow(what: "line length of \(booking)")
        }
    }
}

struct NoTripRow: Error, CustomStringConvertible {
    let what: String
    var description: String { "no row for \(what)" }
}

/// Parses the ISO-8601 times the service emits (milliseconds, `Z`).
func isoDate(_ text: Any?) -> Date? {
    guard let text = text as? String else { return nil }
    return Timestamp.parse(text)
}
