import Foundation
import Logging
import PostgresNIO

/// What one maintenance pass did (printed by `pgtrack maintain`, logged by the service).
public struct MaintenanceReport: Sendable, Codable, Equatable {
    /// False when another node held the maintenance lock: this pass did nothing.
    public var ran = false
    public var partitionsCreated = 0
    public var rollups: [RollupRefresh] = []
    public var retired: [RetiredPartition] = []
    /// Partitions that could not be retired this pass (lock not granted in time, rollups
    /// behind): tried again on the next one.
    public var retireFailures: [String] = []
    public var expired = ExpiredRows()

    enum CodingKeys: String, CodingKey {
        case ran, rollups, retired, expired
        case partitionsCreated = "partitions_created"
        case retireFailures = "retire_failures"
    }
}

/// How far one call brought a tenant's rollups.
public struct RollupRefresh: Sendable, Codable, Equatable {
    public let tenantID: String
    public let fromSeq: Int64
    public let toSeq: Int64
    public let hoursRefreshed: Int64
    public let daysRefreshed: Int64

    enum CodingKeys: String, CodingKey {
        case tenantID = "tenant_id", fromSeq = "from_seq", toSeq = "to_seq"
        case hoursRefreshed = "hours_refreshed", daysRefreshed = "days_refreshed"
    }
}

/// A daily partition dropped whole; for positions, what its compaction kept.
public struct RetiredPartition: Sendable, Codable, Equatable {
    public let partition: String
    public let parent: String
    public let rows: Int64
    public let rawBytes: Int64
    public let tracksWritten: Int64
    public let trackBytes: Int64

    enum CodingKeys: String, CodingKey {
        case partition, parent, rows
        case rawBytes = "raw_bytes", tracksWritten = "tracks_written", trackBytes = "track_bytes"
    }
}

/// Rollup and compacted-track rows deleted for being older than their retention.
public struct ExpiredRows: Sendable, Codable, Equatable {
    public var hourly: Int64 = 0
    public var daily: Int64 = 0
    public var tracks: Int64 = 0
}

/// The time-series lifecycle (SQL/010_partitions.sql, SQL/080_maintenance.sql): partitions
/// created ahead, rollups brought up to the change log, expired partitions compacted and
/// dropped whole, old rollups expired. A pass holds a session advisory lock on one pooled
/// connection, so one node at a time runs it; a node that dies releases it with its connection.
public struct Maintenance: Sendable {
    let client: PostgresClient
    let logger: Logger
    static let lockKey = "pgtrack.maintenance"

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// One pass as of `now` (the real clock in production; tests move it).
    public func run(now: Date = Date(), daysBack: Int, daysAhead: Int) async throws -> MaintenanceReport {
        try await client.withConnection { connection in
            var report = MaintenanceReport()
            guard try await tryLock(connection) else { return report }
            do {
                report = try await pass(on: connection, now: now, daysBack: daysBack, daysAhead: daysAhead)
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(hashtext(\(Self.lockKey)))", logger: logger)
                throw error
            }
            try await connection.query("SELECT pg_advisory_unlock(hashtext(\(Self.lockKey)))", logger: logger)
            return report
        }
    }

    private func tryLock(_ connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("SELECT pg_try_advisory_lock(hashtext(\(Self.lockKey)))", logger: logger)
        for try await locked in rows.decode(Bool.self) { return locked }
        return false
    }

    private func pass(on connection: PostgresConnection, now: Date, daysBack: Int, daysAhead: Int) async throws
        -> MaintenanceReport {
        var report = MaintenanceReport()
        report.ran = true
        for try await created in try await connection.query(
            "SELECT pgtrack_ensure_partitions(\(now), \(daysBack)::integer, \(daysAhead)::integer)", logger: logger
        ).decode(Int.self) {
            report.partitionsCreated = created
        }
        // Rollups first: a change-log day is dropped only after they have consumed it.
        report.rollups = try await refreshRollups(on: connection)
        var expired: [String] = []
        for try await name in try await connection.query(
            "SELECT partition FROM pgtrack_expired_partitions(\(now))", logger: logger
        ).decode(String.self) {
            expired.append(name)
        }
        for name in expired {
            do {
                report.retired.append(try await retire(name, on: connection))
            } catch {
                let reason = describeDatabaseError(error)
                logger.warning("could not retire partition \(name), will retry: \(reason)")
                report.retireFailures.append("\(name): \(reason)")
            }
        }
        for try await (hourly, daily, tracks) in try await connection.query(
            "SELECT hourly, daily, tracks FROM pgtrack_expire_rollups(\(now))", logger: logger
        ).decode((Int64, Int64, Int64).self) {
            report.expired = ExpiredRows(hourly: hourly, daily: daily, tracks: tracks)
        }
        return report
    }

    /// Calls the refresh until every tenant is caught up (each call is bounded, one transaction).
    private func refreshRollups(on connection: PostgresConnection) async throws -> [RollupRefresh] {
        var refreshed: [RollupRefresh] = []
        for _ in 0..<1_000 {
            var behind = false
            for try await (tenant, from, to, hours, days, caughtUp) in try await connection.query(
                "SELECT tenant_id, from_seq, to_seq, hours_refreshed, days_refreshed, caught_up FROM pgtrack_refresh_rollups()",
                logger: logger
            ).decode((String, Int64, Int64, Int64, Int64, Bool).self) {
                refreshed.append(RollupRefresh(tenantID: tenant, fromSeq: from, toSeq: to, hoursRefreshed: hours,
                                               daysRefreshed: days))
                behind = behind || !caughtUp
            }
            if !behind { break }
        }
        return refreshed
    }

    private func retire(_ partition: String, on connection: PostgresConnection) async throws -> RetiredPartition {
        let rows = try await connection.query("""
            SELECT parent, rows_dropped, raw_bytes, tracks_written, track_bytes FROM pgtrack_retire_partition(\(partition))
            """, logger: logger)
        for try await (parent, count, raw, tracks, trackBytes) in rows.decode((String, Int64, Int64, Int64, Int64).self) {
            return RetiredPartition(partition: partition, parent: parent, rows: count, rawBytes: raw,
                                    tracksWritten: tracks, trackBytes: trackBytes)
        }
        throw MaintenanceError.noResult(partition)
    }

    // MARK: Settings

    /// The retention and rollup settings as a JSON object.
    public func settings() async throws -> String {
        let rows = try await client.query("SELECT (to_jsonb(s) - 'id')::text FROM maintenance_settings s", logger: logger)
        for try await json in rows.decode(String.self) { return json }
        throw MaintenanceError.noResult("maintenance_settings")
    }

    /// Sets one setting by name; a bad name or value is an error naming what is allowed.
    public func set(_ name: String, to value: String) async throws {
        do {
            // Errors arrive with the rows: drain them.
            for try await _ in try await client.query("SELECT pgtrack_set_maintenance_setting(\(name), \(value))",
                                                      logger: logger) {}
        } catch let error as PSQLError {
            throw MaintenanceError.rejected(error.serverMessage)
        }
    }

    // MARK: Analysts

    /// Creates a login role that reads schema analytics for one tenant.
    public func createAnalyst(tenant: String, role: String, password: String) async throws {
        do {
            for try await _ in try await client.query("SELECT pgtrack_create_analyst(\(tenant), \(role), \(password))",
                                                      logger: logger) {}
        } catch let error as PSQLError {
            throw MaintenanceError.rejected(error.serverMessage)
        }
    }

    /// Drops an analyst role; false when there was none of that name.
    public func dropAnalyst(role: String) async throws -> Bool {
        for try await dropped in try await client.query("SELECT pgtrack_drop_analyst(\(role))", logger: logger)
            .decode(Bool.self) {
            return dropped
        }
        return false
    }
}

public enum MaintenanceError: Error, CustomStringConvertible {
    case noResult(String)
    case rejected(String)

    public var description: String {
        switch self {
        case .noResult(let what): "no result from \(what)"
        case .rejected(let message): message
        }
    }
}
