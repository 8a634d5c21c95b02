import Foundation
import PostgresNIO
import TrackingCore
import TrackingTestSupport

/// Position bodies as devices post them, and the same positions written with plain SQL.
enum Fixes {
    /// A fix `n`: coordinates, fix time and the attribute `i` all derive from `n`, so an event
    /// can be matched to the fix that caused it. Fix times go forward by 10 ms per `n`.
    static func fields(_ n: Int, booking: String? = nil, start: Date = startTime) -> [String: String] {
        var fields = [
            "latitude": "\(latitude(n))",
            "longitude": "\(longitude(n))",
            "timestamp": "\"\(fixTime(n, start: start).iso8601)\"",
            "attributes": #"{"i":\#(n)}"#,
        ]
        if let booking { fields["booking_id"] = "\"\(booking)\"" }
        return fields
    }

    static func latitude(_ n: Int) -> Double { 52.5 + Double(n % 1_000) * 0.0001 }
    static func longitude(_ n: Int) -> Double { 13.4 + Double(n / 1_000) * 0.0001 }
    static func fixTime(_ n: Int, start: Date = startTime) -> Date { start.addingTimeInterval(Double(n) * 0.01) }

    /// Ten minutes ago when the test process started: every fix of a test is in the past.
    static let startTime = Date().addingTimeInterval(-600)

    /// One JSON object from fields whose values are JSON text (`nil` leaves a field out).
    static func object(_ fields: [String: String?]) -> String {
        let members = fields.compactMap { key, value in value.map { "\"\(key)\":\($0)" } }.sorted()
        return "{" + members.joined(separator: ",") + "}"
    }

    static func object(_ n: Int, booking: String? = nil, overriding overrides: [String: String?] = [:]) -> String {
        var fields: [String: String?] = fields(n, booking: booking)
        for (key, value) in overrides { fields[key] = value }
        return object(fields)
    }

    static func array(_ range: Range<Int>, booking: String? = nil) -> String {
        "[" + range.map { object($0, booking: booking) }.joined(separator: ",") + "]"
    }

    /// Inserts fix `n` with plain SQL, in its own transaction, as any program speaking SQL could.
    static func insertSQL(_ n: Int, tenant: TenantID, device: UUID, on connection: PostgresConnection) async throws {
        let attributes = #"{"i":\#(n)}"#
        try await connection.query("""
            INSERT INTO positions (tenant_id, device_id, fix_time, location, attributes)
            VALUES (\(tenant.rawValue), \(device), \(fixTime(n)),
                    ST_SetSRID(ST_MakePoint(\(longitude(n)), \(latitude(n))), 4326)::geography,
                    \(attributes)::jsonb)
            """, logger: TestCluster.logger)
    }

    static func count(_ sql: PostgresQuery, on connection: PostgresConnection) async throws -> Int {
        for try await count in try await connection.query(sql, logger: TestCluster.logger).decode(Int.self) {
            return count
        }
        return 0
    }
}

extension [String: Any] {
    /// The `attributes.i` of a position object: which fix it is.
    var fixIndex: Int? { (self["attributes"] as? [String: Any])?["i"] as? Int }
}

/// A direct connection of the test's own (another backend than the node's), closed afterwards.
enum TestDatabase {
    static func withConnection<T: Sendable>(
        _ url: DatabaseURL, applicationName: String = "pgtrack-test", _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await TestCluster.connect(url, applicationName: applicationName)
        do {
            let result = try await body(connection)
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }
}
