import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import PostgresNIO
import TrackingCore
import TrackingStore

/// The parts of a running node that callers (tests, health) may need to reach.
public struct TrackingNode: Sendable {
    public let repository: TrackingRepository
    /// What the node remembers of API keys (kept fresh by the listener).
    public let deviceKeys: DeviceKeyCache
    public let listener: NotificationListener
    public let hub: FanOutHub
    public let snapshots: SnapshotCoalescer
    public let tokens: TokenService
    public let registration: UserRegistration
}

/// Builds the HTTP application and its services: the Postgres pool, the listener, the fan-out
/// hub (heartbeats) and the maintenance pass (partitions, rollups, retention). The caller runs it (`runService()` or tests).
public func buildApplication(
    configuration: ServerConfiguration,
    database: DatabaseConnectionSettings,
    logger: Logger
) async throws -> (Application<RouterResponder<AppRequestContext>>, TrackingNode) {
    let client = PostgresClient(configuration: try database.clientConfiguration(), backgroundLogger: logger.forPostgresPool)
    // Kept fresh by the listener below (it LISTENs on the key channel).
    let deviceKeys = DeviceKeyCache()
    let repository = TrackingRepository(client: client, logger: logger, deviceKeys: deviceKeys)
    let hub = FanOutHub(mailboxCapacity: configuration.clientBufferSize,
                        heartbeatInterval: .seconds(configuration.heartbeatSeconds),
                        minBroadcastInterval: configuration.minBroadcastInterval, logger: logger)
    let gate = DatabaseGate(settings: configuration.databaseGate, logger: logger) { try await probeDatabase(database, logger: logger) }
    // The listener's connection is the first to notice a database that stopped or restarted.
    let listener = NotificationListener(settings: database, repository: repository.asNode, sink: hub, logger: logger,
                                        onDisconnect: { gate.suspect() })
    hub.attach(listener)

    let snapshots = SnapshotCoalescer(repository: repository)
    let tokens = await TokenService(secret: configuration.jwtSecret,
                                    accessLifetime: .seconds(configuration.accessTokenSeconds),
                                    refreshLifetime: .seconds(configuration.refreshTokenDays * 86_400))
    let registration = UserRegistration(repository: repository, bcryptCost: configuration.bcryptCost)

    let router = Router(context: AppRequestContext.self)
    router.addMiddleware { APIErrorMiddleware() }
    router.addMiddleware { NULRejectionMiddleware() }
    router.addMiddleware { DatabaseGateMiddleware(gate: gate) }
    let authenticator = Authenticator(repository: repository, tokens: tokens)
    AuthRoutes(repository: repository, authenticator: authenticator, tokens: tokens, registration: registration).register(on: router)
    UserRoutes(repository: repository, authenticator: authenticator).register(on: router)
    DeviceRoutes(repository: repository, authenticator: authenticator).register(on: router)
    LocationRoutes(repository: repository, authenticator: authenticator, validator: configuration.positionValidator,
                   ingest: IngestCoalescer(repository: repository))
        .register(on: router)
    let tripAccess = TripAccess(repository: repository, authenticator: authenticator)
    TripRoutes(repository: repository, authenticator: authenticator, access: tripAccess, validator: configuration.positionValidator)
        .register(on: router)
    TrackingRoutes(repository: repository, authenticator: authenticator, access: tripAccess).register(on: router)
    SnapshotRoutes(authenticator: authenticator, snapshots: snapshots).register(on: router)
    let streams = StreamRoutes(repository: repository, authenticator: authenticator, hub: hub, snapshots: snapshots,
                               slowConsumerGrace: configuration.slowConsumerGrace)
    streams.register(on: router)
    HealthRoutes(repository: repository, listener: listener, hub: hub, gate: gate, timeout: configuration.healthTimeout)
        .register(on: router)
    SyncRoutes(repository: repository, authenticator: authenticator).register(on: router)
    FleetRoutes(repository: repository, authenticator: authenticator).register(on: router)
    FleetSettingsRoutes(repository: repository, authenticator: authenticator).register(on: router)
    IngestRoutes(repository: repository, authenticator: authenticator, validator: configuration.positionValidator)
        .register(on: router)

    // WebSocket upgrades have their own router; plain GETs of the same paths reach `router`.
    var socketSettings = WebSocketSession.Settings()
    socketSettings.idleTimeout = .seconds(configuration.webSocketIdleSeconds)
    let sockets = WebSocketRoutes(repository: repository, authenticator: authenticator, access: tripAccess, hub: hub,
                                  snapshots: snapshots, settings: socketSettings)
    sockets.register(fallbacks: router)
    let upgradeRouter = Router(context: WebSocketRequestContextWithAdmission.self)
    upgradeRouter.addMiddleware { NULRejectionMiddleware() }
    upgradeRouter.addMiddleware { DatabaseGateMiddleware(gate: gate) }
    sockets.register(upgrades: upgradeRouter)

    let webSocketResponder = upgradeRouter.buildResponder()
    let openStreams = OpenStreams()
    let webSocketConfiguration = HTTP1WebSocketUpgradeChannel.Configuration(
        ws: .init(maxFrameSize: socketSettings.maxFrameBytes,
                  autoPing: .enabled(timePeriod: .seconds(configuration.webSocketPingSeconds))))
    let serverName = "pgtrack"
    var app = Application(
        router: router,
        // A connection whose first request is an SSE stream is served on the event loop (see
        // StreamFirstChannel); every other connection is Hummingbird's HTTP/1 with WebSocket upgrade.
        server: HTTPServerBuilder { responder in
            StreamFirstChannel(
                inner: HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder,
                                                    configuration: webSocketConfiguration),
                streams: EventLoopStreams(routes: streams, serverName: serverName, open: openStreams, gate: gate))
        },
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: serverName),
        logger: logger)
    // Shut down in reverse: the server, …, the event-loop streams (`openStreams` waits for
    // them to close), then the hub, the listener and the pool they use.
    app.addServices(
        client, gate, listener, hub, openStreams,
        MaintenanceService(maintenance: Maintenance(client: client, logger: logger), daysBack: configuration.partitionDaysBack,
                           daysAhead: configuration.partitionDaysAhead, interval: configuration.maintenanceInterval,
                           logger: logger),
        SyncUpkeep(repository: repository, lagInterval: configuration.cdcLagInterval, logger: logger))
    return (app, TrackingNode(repository: repository, deviceKeys: deviceKeys, listener: listener, hub: hub, snapshots: snapshots, tokens: tokens,
                              registration: registration))
}
