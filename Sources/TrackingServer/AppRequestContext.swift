import Hummingbird
import NIOCore

/// The request context of every route.
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request's connection: a keep-alive SSE stream closes it under a client that reads nothing.
    public let channel: any Channel

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Bodies are read with explicit limits per route (1 MiB for positions).
    public var maxUploadSize: Int { ServerConfiguration.maxBodyBytes }
}
