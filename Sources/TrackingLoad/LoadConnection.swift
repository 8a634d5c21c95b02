import NIOCore
import NIOPosix

/// The simulator's own connections (drivers and viewers are NIO handlers, see DriverLoop).
enum LoadConnection {
    /// Connects to `host:port` from `loop`; `setup` adds the handlers, on the channel's loop.
    static func connect(host: String, port: Int, on loop: any EventLoop,
                        _ setup: @escaping @Sendable (any Channel) throws -> Void) async throws -> any Channel {
        try await ClientBootstrap(group: loop)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try setup(channel) } }
            .connect(host: host, port: port).get()
    }

    /// Waits for what the handlers report; a cancelled caller (a run that failed elsewhere)
    /// closes the connection, which makes the handlers report.
    static func wait<T: Sendable>(for finished: EventLoopFuture<T>, closingOnCancel channel: any Channel) async throws -> T {
        try await withTaskCancellationHandler {
            try await finished.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}
