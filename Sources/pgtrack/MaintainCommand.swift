import ArgumentParser
import Foundation
import Logging
import TrackingStore

/// One maintenance pass on demand: what `pgtrack serve` runs every --maintenance-seconds.
struct Maintain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one maintenance pass now: partitions ahead, rollups, compaction and retention. Prints JSON.",
        discussion: """
            Settings (retention per table, rollup thresholds) live in the database, so every node follows them; \
            change them with --set NAME=VALUE (repeatable), show them with --show-settings. Names: \
            positions_retention_days (30), change_log_retention_hours (24), rollup_retention_days (365), \
            track_retention_days (365), compact_before_drop (true), rollup_gap_seconds (300), rollup_moving_speed (1.0 m/s).
            """)

    @Option(help: "Days of position partitions to create before today (capped at the positions retention).")
    var partitionDaysBack = 30
    @Option(help: "Days of position and change-log partitions to create ahead of today.") var partitionDaysAhead = 7
    @Option(help: "Run as of this instant (ISO-8601, e.g. 2027-01-31T00:00:00Z) instead of now: shows what a later pass drops.")
    var now: String?
    @Option(name: .customLong("set"), help: "Change a setting before the pass, NAME=VALUE (repeatable).")
    var assignments: [String] = []
    @Flag(help: "Print the settings and exit without running a pass.") var showSettings = false
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard (1...3_650).contains(partitionDaysBack), (1...366).contains(partitionDaysAhead) else {
            throw ValidationError("--partition-days-back must be 1–3650 and --partition-days-ahead 1–366")
        }
        if let now, Self.instant(now) == nil {
            throw ValidationError("--now must be an ISO-8601 instant such as 2027-01-31T00:00:00Z")
        }
        for assignment in assignments where Self.split(assignment) == nil {
            throw ValidationError("--set takes NAME=VALUE, e.g. --set positions_retention_days=45 (got \"\(assignment)\")")
        }
    }

    func run() async throws {
        Pgtrack.bootstrapLogging()
        let logger = Logger(label: "pgtrack")
        let (settings, startedCluster) = try await database.resolve(logger: logger)
        defer { try? startedCluster?.stop() }
        let pairs = assignments.compactMap(Self.split)
        let instant = now.flatMap(Self.instant) ?? Date()
        let (back, ahead, showOnly) = (partitionDaysBack, partitionDaysAhead, showSettings)
        let output: String
        do {
            output = try await withPostgresClient(settings, logger: logger) { client in
                let maintenance = Maintenance(client: client, logger: logger)
                for (name, value) in pairs { try await maintenance.set(name, to: value) }
                let current = try await maintenance.settings()
                if showOnly { return current }
                let report = try await maintenance.run(now: instant, daysBack: back, daysAhead: ahead)
                guard report.ran else {
                    throw ValidationError("another node is running maintenance right now; try again in a minute")
                }
                return #"{"report":\#(try jsonLine(report)),"settings":\#(current)}"#
            }
        } catch let error as MaintenanceError {
            throw ValidationError(error.description)
        }
        print(output)
    }

    static func split(_ assignment: String) -> (String, String)? {
        guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else { return nil }
        return (String(assignment[..<equals]), String(assignment[assignment.index(after: equals)...]))
    }

    static func instant(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }
}
