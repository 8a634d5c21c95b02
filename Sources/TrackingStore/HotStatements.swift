import Foundation
import NIOCore
import PostgresNIO

// Statements on hot paths, as named prepared statements: PostgresNIO prepares each once
// per pooled connection, and PostgreSQL then reuses its plan. Sent as ordinary queries they were
// parsed and planned on every call; under the reference load (`pgtrack simulate --scenario
// seed`, pg_stat_statements with track_planning) the key lookup alone was planned 30,330 times
// in 30 s, with 4.0 s of planning against 0.5 s of execution.
// A statement whose objects change (the SQL/ files are re-applied at every start) is
// re-planned by PostgreSQL; one it can no longer run (a changed result type, a failed
// preparation) closes its connection (`executeHot`).

/// The device behind an API key's SHA-256 (unique index), unless the key is revoked.
struct DeviceByKeyHash: PostgresPreparedStatement {
    static let name = "pgtrack_device_by_key_hash"
    static let sql = """
        SELECT k.key_hash, d.id, d.tenant_id, d.name, d.group_name, d.grade, d.unique_id
          FROM device_api_keys k JOIN devices d ON d.id = k.device_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL
        """
    static let bindingDataTypes: [PostgresDataType] = [.bytea]
    typealias Row = (ByteBuffer, UUID, String, String, String, Int, String?)

    let keyHash: ByteBuffer

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(keyHash)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {
        try row.decode(Row.self)
    }
}

/// The REST ingest's one statement (SQL/036_ingest.sql): rows of any tenants as a JSON array.
struct IngestPositions: PostgresPreparedStatement {
    static let name = "pgtrack_ingest_positions"
    static let sql = "SELECT ids, filtering FROM pgtrack_ingest_positions($1::jsonb)"
    static let bindingDataTypes: [PostgresDataType] = [.text]
    typealias Row = ([Int64], [String])

    let rowsJSON: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(rowsJSON)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {
        try row.decode(Row.self)
    }
}

/// A booking stream's opening: the latest unfiltered fix of each device on the booking. There
/// is no time bound to prune with, so a fresh plan covers every day partition of positions.
struct BookingSnapshot: PostgresPreparedStatement {
    static let name = "pgtrack_booking_snapshot"
    static let sql = """
        SELECT h.last_seq, latest.device_id, d.group_name, d.grade, latest.j::text
          FROM change_log_heads h
          LEFT JOIN (
              SELECT DISTINCT ON (p.device_id) p.tenant_id, p.device_id,
                     pgtrack_position_json(p.device_id, p.booking_id, p.fix_time, p.received_at,
                         p.location, p.speed, p.heading, p.altitude, p.accuracy, p.battery,
                         p.attributes) AS j
                FROM positions p
               WHERE p.tenant_id = $1 AND p.booking_id = $2
                 AND p.filter_reason IS NULL  -- a filtered fix is never a marker
               ORDER BY p.device_id, p.fix_time DESC, p.id DESC) latest ON latest.tenant_id = h.tenant_id
          LEFT JOIN devices d ON d.id = latest.device_id
         WHERE h.tenant_id = $1
         ORDER BY latest.device_id
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text]
    typealias Row = TrackingRepository.SnapshotRow

    let tenant: String
    let booking: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(tenant)
        bindings.append(booking)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {
        try row.decode(Row.self)
    }
}

/// A statement failed inside a transaction in a way that leaves its connection unable to run
/// it; `TrackingRepository.transaction` closes the connection once it has rolled back and
/// throws `underlying`.
struct UnusableConnection: Error {
    let underlying: PSQLError
}

extension TrackingRepository {
    /// Runs one of the statements above and reads all its rows, on `connection` or a pooled one.
    ///
    /// A connection can be left unable to run a prepared statement: PostgresNIO remembers a
    /// failed preparation (a function missing while a deploy replaced it, say) for the life of
    /// the connection and fails every later call with it, and PostgreSQL refuses to run a
    /// prepared statement whose result type changed ("cached plan must not change result
    /// type"). Such an error closes the connection, so the pool opens a fresh one and the next
    /// call prepares again instead of failing the same way until the node restarts.
    func executeHot<Statement: PostgresPreparedStatement>(
        _ statement: Statement, on connection: PostgresConnection? = nil
    ) async throws -> [Statement.Row] {
        guard let connection else {
            return try await client.withConnection { try await run(statement, on: $0, leased: true) }
        }
        return try await run(statement, on: connection, leased: false)
    }

    /// `leased`: this call leased the connection, so it closes it and waits, before the pool
    /// gets it back (no other caller is handed a dying one). Inside a caller's transaction it
    /// throws `UnusableConnection` instead and `transaction` closes the connection after its
    /// ROLLBACK: closing it in the middle of the transaction hung the stream that ran it (test).
    private func run<Statement: PostgresPreparedStatement>(
        _ statement: Statement, on connection: PostgresConnection, leased: Bool
    ) async throws -> [Statement.Row] {
        do {
            var rows: [Statement.Row] = []
            for try await row in try await connection.execute(statement, logger: logger) { rows.append(row) }
            return rows
        } catch let error as PSQLError where Self.mayLeaveStatementUnusable(error) {
            logger.warning("closing a database connection that cannot run \(Statement.name): \(error.serverMessage)")
            guard leased else { throw UnusableConnection(underlying: error) }
            try? await connection.close()
            throw error
        }
    }

    /// Any server error except those about the call's data: a failed preparation is kept
    /// whatever its cause (a timeout or a lock while DDL runs as well as a missing function), so
    /// only errors that cannot come from preparing keep the connection: data exceptions (22),
    /// integrity violations (23, e.g. a device deleted meanwhile), errors raised by the
    /// functions themselves (P0), and serialization failures or deadlocks (40). Errors that are
    /// not the server's (a lost connection) are the pool's business.
    static func mayLeaveStatementUnusable(_ error: PSQLError) -> Bool {
        guard let state = error.sqlState else { return false }
        return !["22", "23", "P0", "40"].contains(String(state.prefix(2)))
    }
}
