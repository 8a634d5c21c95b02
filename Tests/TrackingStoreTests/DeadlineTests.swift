import Testing
@testable import TrackingStore

/// `withDeadline` returns on time even when the operation never completes and ignores
/// cancellation, which is what a query on a connection that closed under it can do.
@Suite("withDeadline", .timeLimit(.minutes(1)))
struct DeadlineTests {
    @Test("an operation that never completes gives DeadlineExceeded instead of hanging the caller")
    func neverCompletes() async throws {
        do {
            _ = try await withDeadline(.milliseconds(100), "a stuck call") {
                // Never resumed and deaf to cancellation, like a promise no one will fulfil.
                await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
            }
            Issue.record("a call that never completes returned")
        } catch let error as DeadlineExceeded {
            #expect(error.what == "a stuck call")
        }
    }

    @Test("the operation's value or error comes back when it finishes first")
    func finishesFirst() async throws {
        #expect(try await withDeadline(.seconds(30), "quick") { 42 } == 42)
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await withDeadline(.seconds(30), "failing") { () async throws -> Int in throw Boom() }
        }
    }

    @Test("cancelling the caller ends the wait with CancellationError")
    func callerCancelled() async throws {
        let waiting = Task {
            try await withDeadline(.seconds(600), "a long call") {
                await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
    }
}
