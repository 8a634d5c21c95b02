import TrackingStore

/// A database error as the server (or the driver) told it. PSQLError's own description is
/// generic on purpose, so a failed test said only "PSQLError – Generic description".
public struct DatabaseTestError: Error, CustomStringConvertible {
    public let description: String
}

/// Runs `body`; any error it throws comes out with the database's message (or PostgresNIO's
/// error code, for a connection that failed or timed out).
public func revealingDatabaseErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        throw DatabaseTestError(description: describeDatabaseError(error))
    }
}
