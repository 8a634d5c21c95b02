import Foundation
import Logging
import ServiceLifecycle
import TrackingStore

/// Runs the time-series lifecycle inside `pgtrack serve`: a pass at start and then every
/// `interval` (partitions ahead, rollups up to the change log, expired partitions compacted and
/// dropped, old rollups expired). Every node runs this timer; the pass's advisory lock lets one
/// node at a time do the work, so a fleet of nodes does it once.
struct MaintenanceService: Service {
    let maintenance: Maintenance
    let daysBack: Int
    let daysAhead: Int
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while true {
                var delay = interval
                do {
                    let report = try await maintenance.run(daysBack: daysBack, daysAhead: daysAhead)
                    log(report)
                } catch {
                    logger.warning("maintenance failed, retrying in 10 s: \(describeDatabaseError(error))")
                    delay = min(delay, .seconds(10))
                }
                try await Task.sleep(for: delay)
            }
        }
    }

    private func log(_ report: MaintenanceReport) {
        guard report.ran else { return }
        if report.partitionsCreated > 0 {
            logger.info("created partitions", metadata: ["count": "\(report.partitionsCreated)"])
        }
        for retired in report.retired {
            logger.info("retired partition", metadata: [
                "partition": "\(retired.partition)", "rows": "\(retired.rows)", "tracks": "\(retired.tracksWritten)",
            ])
        }
        let hours = report.rollups.reduce(0) { $0 + $1.hoursRefreshed }
        if hours > 0 { logger.debug("rollups refreshed", metadata: ["hours": "\(hours)"]) }
    }
}
