import Logging
import ServiceLifecycle
import TrackingStore

/// One timer per node for the sync tables: every `lagInterval` it logs each tenant's `cdc_lag`
/// event (admins in the `admin:<tenant>` room receive it; when several nodes run, the first in
/// each period logs and the others find it done), and hourly it forgets old tombstones.
struct SyncUpkeep: Service {
    let repository: TrackingRepository
    let lagInterval: Duration
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            var lastCleanup = ContinuousClock.now - .seconds(3_600)
            while true {
                do {
                    try await repository.logSyncLag(period: lagInterval)
                    if ContinuousClock.now - lastCleanup >= .seconds(3_600) {
                        let forgotten = try await repository.forgetSyncTombstones()
                        if forgotten > 0 { logger.info("forgot sync tombstones", metadata: ["count": "\(forgotten)"]) }
                        lastCleanup = .now
                    }
                } catch {
                    logger.warning("sync upkeep failed: \(describeDatabaseError(error))")
                }
                try await Task.sleep(for: lagInterval)
            }
        }
    }
}
