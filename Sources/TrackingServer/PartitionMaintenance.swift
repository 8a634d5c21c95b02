import Logging
import ServiceLifecycle
import TrackingStore

/// Keeps daily position partitions created ahead: at start and then hourly, so a node running
/// across midnight never meets a day without a partition.
struct PartitionMaintenance: Service {
    let repository: TrackingRepository
    let daysBack: Int
    let daysAhead: Int
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while true {
                var delay = Duration.seconds(3_600)
                do {
                    let created = try await repository.ensurePositionPartitions(daysBack: daysBack, daysAhead: daysAhead)
                    if created > 0 { logger.info("created position partitions", metadata: ["count": "\(created)"]) }
                } catch {
                    logger.warning("partition maintenance failed, retrying in 10 s: \(describeDatabaseError(error))")
                    delay = .seconds(10)
                }
                try await Task.sleep(for: delay)
            }
        }
    }
}
