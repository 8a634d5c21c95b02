import TrackingCore

/// Settings of one pgtrack node (flags of `pgtrack serve`).
public struct ServerConfiguration: Sendable {
    /// Largest accepted request body: a 1,000-position batch fits comfortably.
    public static let maxBodyBytes = 1 << 20

    public var host: String
    public var port: Int
    /// Days of position partitions kept before today (older fixes are rejected) and created ahead.
    public var partitionDaysBack: Int
    public var partitionDaysAhead: Int
    /// How far ahead of the server clock a fix may be.
    public var maxFutureSkewSeconds: Double
    /// Events buffered per stream client before it counts as too slow and gets a reset.
    public var clientBufferSize: Int
    public var heartbeatSeconds: Int
    /// HS256 key of access tokens. Every node of a deployment needs the same one.
    public var jwtSecret: String
    public var accessTokenSeconds: Int
    public var refreshTokenDays: Int
    /// bcrypt cost of new password hashes (2^cost rounds).
    public var bcryptCost: UInt8
    /// At most one pushed update per device per this interval (latest wins); nil pushes every one.
    public var minBroadcastInterval: Duration?
    /// WebSocket keepalive: a ping this often; a socket that misses a pong is closed.
    public var webSocketPingSeconds: Int
    /// A WebSocket in no room for this long is closed.
    public var webSocketIdleSeconds: Int
    /// How often each tenant's `cdc_lag` event is logged for its admin room.
    public var cdcLagInterval: Duration
    /// How often the maintenance pass runs (rollups, partitions, retention).
    public var maintenanceInterval: Duration
    /// Bounds on request work while the database is slow or gone (see `DatabaseGate`).
    public var databaseGate = DatabaseGate.Settings()
    /// How long an SSE client that overflowed its buffer may take to read the reset before its
    /// connection is closed (see `SlowConsumerRule`).
    public var slowConsumerGrace: Duration = .seconds(60)
    /// How long `/health` waits for the database before it answers 503 (degraded).
    public var healthTimeout: Duration = .seconds(2)

    public init(host: String = "127.0.0.1", port: Int = 8080, partitionDaysBack: Int = 30, partitionDaysAhead: Int = 7,
                maxFutureSkewSeconds: Double = 300, clientBufferSize: Int = 2_048, heartbeatSeconds: Int = 15,
                jwtSecret: String = JWTSecret.generate(), accessTokenSeconds: Int = 900, refreshTokenDays: Int = 30,
                bcryptCost: UInt8 = 12, minBroadcastInterval: Duration? = nil, webSocketPingSeconds: Int = 30,
                webSocketIdleSeconds: Int = 60, cdcLagInterval: Duration = .seconds(5),
                maintenanceInterval: Duration = .seconds(60)) {
        self.host = host
        self.port = port
        self.partitionDaysBack = partitionDaysBack
        self.partitionDaysAhead = partitionDaysAhead
        self.maxFutureSkewSeconds = maxFutureSkewSeconds
        self.clientBufferSize = clientBufferSize
        self.heartbeatSeconds = heartbeatSeconds
        self.jwtSecret = jwtSecret
        self.accessTokenSeconds = accessTokenSeconds
        self.refreshTokenDays = refreshTokenDays
        self.bcryptCost = bcryptCost
        self.minBroadcastInterval = minBroadcastInterval
        self.webSocketPingSeconds = webSocketPingSeconds
        self.webSocketIdleSeconds = webSocketIdleSeconds
        self.cdcLagInterval = cdcLagInterval
        self.maintenanceInterval = maintenanceInterval
    }

    var positionValidator: PositionValidator {
        PositionValidator(maxFutureSkew: maxFutureSkewSeconds, maxAge: Double(partitionDaysBack) * 86_400)
    }
}
