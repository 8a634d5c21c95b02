import Foundation
import PostgresNIO
import TrackingCore
import TrackingStore
import TrackingTestSupport

extension PostgresClient {
    /// The single value of a one-row, one-column query.
    func value<T: PostgresDecodable & Sendable>(_ query: PostgresQuery, as type: T.Type = T.self) async throws -> T {
        for try await value in try await self.query(query, logger: TestCluster.logger).decode(T.self) { return value }
        throw NoRow(query: query.sql)
    }

    /// Runs a statement and drains its rows.
    func run(_ query: PostgresQuery) async throws {
        for try await _ in try await self.query(query, logger: TestCluster.logger) {}
    }
}

struct NoRow: Error, CustomStringConvertible {
    let query: String
    var description: String { "no row returned by: \(query)" }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(15), _ condition: @Sendable () async throws -> Bool) async rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while clock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

extension PSQLError {
    var sqlState: String? { serverInfo?[.sqlState] }
}
