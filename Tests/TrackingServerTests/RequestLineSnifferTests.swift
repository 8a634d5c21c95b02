import HummingbirdCore
import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing
@testable import TrackingServer

/// The first handler of every connection: whatever happens to the connection, the route its
/// task waits on completes.
@Suite("request line sniffer", .timeLimit(.minutes(1)))
struct RequestLineSnifferTests {
    typealias Route = StreamFirstChannel<HTTP1Channel>.Route

    @Test("a connection removed before it sent anything (never active, so no channelInactive) still completes its route")
    func removedBeforeAnyRequest() throws {
        let channel = EmbeddedChannel()
        let route = channel.eventLoop.makePromise(of: Route.self)
        let completed = Flag()
        route.futureResult.whenComplete { _ in completed.value.store(true, ordering: .relaxed) }
        let sniffer = RequestLineSniffer(inner: HTTP1Channel(responder: { _, _, _ in }), route: route,
                                         logger: Logger(label: "test"))
        try channel.pipeline.syncOperations.addHandler(sniffer)
        // What the server's close of a not-yet-active connection does to its handlers.
        try channel.pipeline.syncOperations.removeHandler(sniffer).wait()
        channel.embeddedEventLoop.run()
        let routeCompleted = completed.value.load(ordering: .relaxed)
        #expect(routeCompleted, "the connection's task would wait for ever on its route")
        route.fail(ChannelError.eof)  // ignored once completed; without the fix, spares the leak trap
        _ = try? channel.finish()
    }

    final class Flag: Sendable {
        let value = Atomic(false)
    }
}
