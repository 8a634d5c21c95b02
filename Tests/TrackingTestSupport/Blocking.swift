import Dispatch

/// Runs blocking work (initdb, pg_ctl, waiting on a process) on a Dispatch thread instead of
/// Swift's cooperative pool. The pool has one thread per core (two here): a test that blocks
/// one for seconds stalls every other test's tasks, and live nodes then miss their 5 s
/// connect timeouts.
@discardableResult
public func offCooperativePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try work() })
        }
    }
}
