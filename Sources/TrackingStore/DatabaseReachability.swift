import Logging
import PostgresNIO
import _ConnectionPoolModule

/// Whether `error` says the database could not be reached or went away under the call, rather
/// than anything about the call itself: a lost or refused connection, the server shutting down
/// or restarting (SQLSTATE class 08, 57P01 `terminating connection due to administrator
/// command`, 57P02, 57P03 `the database system is starting up`, 53300 too many connections),
/// or the pool giving up connecting. The same call may succeed once the database is back, so
/// clients get 503 `unavailable` with Retry-After, not 500.
public func isConnectionLoss(_ error: any Error) -> Bool {
    switch error {
    case let error as PSQLError:
        switch error.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed:
            return true
        case .server:
            guard let state = error.sqlState else { return false }
            return state.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300"].contains(state)
        default:
            return false
        }
    case let error as UnusableConnection:
        return isConnectionLoss(error.underlying)
    case is ConnectionPoolError:
        return true
    case is DeadlineExceeded:
        return true
    default:
        return false
    }
}

/// Opens a connection of its own, runs `SELECT 1` and closes it: whether PostgreSQL can be
/// reached at all, asked beside the pool (whose connections may all be busy on a loaded node,
/// which is no outage). Throws what went wrong; a refused connection fails at once.
public func probeDatabase(_ settings: DatabaseConnectionSettings, logger: Logger) async throws {
    let configuration = try settings.connectionConfiguration(applicationName: "pgtrack-probe")
    let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
    do {
        for try await _ in try await connection.query("SELECT 1", logger: logger) {}
    } catch {
        try? await connection.close()
        throw error
    }
    try await connection.close()
}
