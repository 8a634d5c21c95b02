import Hummingbird

/// The request context of every route.
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: Source) {
        self.coreContext = .init(source: source)
    }

    /// Bodies are read with explicit limits per route (1 MiB for positions).
    public var maxUploadSize: Int { ServerConfiguration.maxBodyBytes }
}
