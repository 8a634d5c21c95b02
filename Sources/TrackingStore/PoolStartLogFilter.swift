import Logging

extension Logger {
    /// This logger for a PostgresClient's `backgroundLogger`, without the pool's warning that a
    /// connection was asked for before `run()` started. Every caller starts `run()` in a task
    /// beside its first query, so which comes first is a race (admin commands printed the
    /// warning about half the time); the request simply waits for the pool, so nothing is wrong.
    public var forPostgresPool: Logger {
        var logger = Logger(label: label) { _ in PoolStartLogFilter(inner: self.handler) }
        logger.logLevel = logLevel
        return logger
    }
}

private struct PoolStartLogFilter: LogHandler {
    var inner: any LogHandler

    var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        if event.level == .warning, "\(event.message)".hasPrefix("Trying to lease connection from `PostgresClient`, but") { return }
        inner.log(event: event)
    }
}
