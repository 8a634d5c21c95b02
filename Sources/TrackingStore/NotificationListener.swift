import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization
import TrackingCore

/// Receives the events of every topic this node listens to, in seq order per topic.
public protocol BusEventSink: Sendable {
    func deliver(_ events: [ChangeEvent], to topic: BusTopic)
}

/// The node's one listening connection.
///
/// It LISTENs only to topics that have a local subscriber, reads the change log when a
/// doorbell names rows it did not carry, pings the connection to notice a silent death, and
/// reconnects with exponential backoff. After every (re)connect it re-LISTENs and reads the log
/// from the last seq it delivered per topic, so a dropped connection never loses an event.
public actor NotificationListener: Service {
    public struct Status: Sendable, Equatable {
        public let connected: Bool
        public let topics: Int
        public let reconnects: Int
    }

    struct TopicState {
        var subscribers = 0
        /// Last seq delivered to the sink. Set when the topic is first LISTENed (to the log head
        /// read right after LISTEN), advanced by every delivery.
        var cursor: Int64?
        var consumer: Task<Void, Never>?
        /// LISTEN is active on the current connection and the topic has caught up.
        var ready = false
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    }

    let settings: DatabaseConnectionSettings
    let repository: TrackingRepository
    let logger: Logger
    let sink: any BusEventSink
    /// How often the idle connection is pinged.
    let pingInterval: Duration
    /// How long a subscriber waits for the listener to be connected before giving up.
    let readyTimeout: Duration
    /// Called each time the listening connection is lost or cannot be opened (the node's first
    /// sign of an outage), not when the listener stops.
    let onDisconnect: @Sendable () -> Void

    private var topics: [BusTopic: TopicState] = [:]
    /// The LISTEN on the key channel, while connected (see `watchKeys`).
    private var keyWatch: Task<Void, Never>?
    private var connection: PostgresConnection?
    private var generation = 0
    private var reconnects = 0
    private var nextWaiterID: UInt64 = 0
    private var stopped = false
    /// One decoder for every doorbell instead of one per notification.
    private let doorbellDecoder = JSONDecoder()

    public init(settings: DatabaseConnectionSettings, repository: TrackingRepository, sink: any BusEventSink,
                logger: Logger, pingInterval: Duration = .seconds(5), readyTimeout: Duration = .seconds(10),
                onDisconnect: @escaping @Sendable () -> Void = {}) {
        self.settings = settings
        self.repository = repository
        self.sink = sink
        self.logger = logger
        self.pingInterval = pingInterval
        self.readyTimeout = readyTimeout
        self.onDisconnect = onDisconnect
    }

    public var status: Status {
        Status(connected: connection != nil, topics: topics.count, reconnects: reconnects)
    }

    // MARK: Subscribing

    /// Makes sure `topic` is LISTENed and caught up, then returns. Every event committed after
    /// this returns reaches the sink. Throws `APIError.unavailable` if the database stays unreachable.
    public func subscribe(_ topic: BusTopic) async throws {
        guard !stopped else { throw APIError.unavailable("the server is shutting down") }
        var state = topics[topic] ?? TopicState()
        state.subscribers += 1
        topics[topic] = state
        if state.consumer == nil, let connection {
            startConsumer(for: topic, on: connection, generation: generation)
        }
        if topics[topic]?.ready == true { return }
        do {
            try await waitUntilReady(topic)
        } catch {
            unsubscribe(topic)
            throw error
        }
    }

    public func unsubscribe(_ topic: BusTopic) {
        guard var state = topics[topic] else { return }
        state.subscribers -= 1
        if state.subscribers > 0 {
            topics[topic] = state
            return
        }
        state.consumer?.cancel()  // leaving the listen closure sends UNLISTEN
        topics[topic] = nil
        for waiter in state.waiters.values { waiter.resume(throwing: APIError.unavailable("the subscription ended before it was ready")) }
    }

    private func waitUntilReady(_ topic: BusTopic) async throws {
        nextWaiterID += 1
        let id = nextWaiterID
        let timeout = readyTimeout
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expireWaiter(id, topic: topic)
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            guard topics[topic] != nil else {
                continuation.resume(throwing: APIError.unavailable("the subscription ended before it was ready"))
                return
            }
            topics[topic]?.waiters[id] = continuation
        }
    }

    private func expireWaiter(_ id: UInt64, topic: BusTopic) {
        guard let waiter = topics[topic]?.waiters.removeValue(forKey: id) else { return }
        waiter.resume(throwing: APIError.unavailable("the database listener is not connected; retry shortly", retryAfterSeconds: 2))
    }

    // MARK: Consuming

    private func startConsumer(for topic: BusTopic, on connection: PostgresConnection, generation: Int) {
        topics[topic]?.consumer = Task {
            do {
                try await connection.listen(on: topic.channel) { notifications in
                    try await self.listening(topic, generation: generation)
                    for try await notification in notifications {
                        try await self.ring(topic, payload: notification.payload)
                    }
                }
            } catch is CancellationError {
            } catch {
                // The connection dropped (the supervisor reconnects) or a catch-up read failed.
                self.logger.debug("listen on \(topic.channel) ended: \(describeDatabaseError(error))")
                if self.generation == generation { self.connection?.close().whenComplete { _ in } }
            }
        }
    }

    /// LISTEN is active: catch up from the cursor (or set it to the head), then mark ready.
    /// A user topic has no log: after a reconnect its subscribers are told to re-read the
    /// scope, since a ring may have been missed while the connection was down.
    private func listening(_ topic: BusTopic, generation: Int) async throws {
        guard topics[topic] != nil else { throw CancellationError() }
        if case .user = topic {
            if topics[topic]?.cursor != nil {
                sink.deliver([ChangeEvent(seq: 0, kind: ChangeEvent.scopeRecheck, json: "{}")], to: topic)
            }
            topics[topic]?.cursor = 0
        } else if let cursor = topics[topic]?.cursor {
            try await catchUp(topic, after: cursor, through: nil)
        } else {
            let head = try await repository.logBounds(tenant: topic.tenant)?.lastSeq ?? 0
            // Keep any cursor a concurrent delivery set meanwhile.
            if topics[topic] != nil, topics[topic]?.cursor == nil { topics[topic]?.cursor = head }
        }
        guard self.generation == generation, var state = topics[topic] else { throw CancellationError() }
        state.ready = true
        let waiters = state.waiters
        state.waiters = [:]
        topics[topic] = state
        for waiter in waiters.values { waiter.resume() }
    }

    /// One doorbell: deliver its inline events, or read the range it names from the log.
    private func ring(_ topic: BusTopic, payload: String) async throws {
        if case .user(let tenant, let user) = topic {
            guard let doorbell = try? doorbellDecoder.decode(UserDoorbell.self, from: Data(payload.utf8)),
                  doorbell.tenant == tenant.rawValue, doorbell.user == user
            else {
                logger.warning("ignoring malformed notification on \(topic.channel)")
                return
            }
            sink.deliver([ChangeEvent(seq: doorbell.version, kind: ChangeEvent.scopeRecheck, json: "{}")], to: topic)
            return
        }
        guard let doorbell = try? doorbellDecoder.decode(Doorbell.self, from: Data(payload.utf8)) else {
            logger.warning("ignoring malformed notification on \(topic.channel)")
            return
        }
        guard doorbell.tenant == topic.tenant.rawValue, let cursor = topics[topic]?.cursor else { return }
        guard doorbell.last > cursor else { return }  // already delivered (e.g. during catch-up)
        // On a tenant topic seqs are contiguous: a first seq past cursor + 1 means a missed ring.
        let contiguous = topic.isSparse || doorbell.first <= cursor + 1
        if contiguous, let inline = doorbell.events, inline.count == doorbell.count {
            deliver(inline.filter { $0.seq > cursor }, to: topic)
        } else {
            try await catchUp(topic, after: cursor, through: doorbell.last)
        }
    }

    /// Reads and delivers the log of `topic` after `after`, page by page.
    private func catchUp(_ topic: BusTopic, after: Int64, through: Int64?) async throws {
        var position = after
        while true {
            let page = try await repository.readLog(topic, after: position, through: through, limit: 1_000)
            guard let cursor = topics[topic]?.cursor else { return }
            let fresh = page.filter { $0.seq > cursor }
            deliver(fresh, to: topic)
            guard let last = page.last, page.count == 1_000 else {
                // Read through `through`: the log holds nothing more for this topic up to there
                // (the events it does not carry were filtered out by the read).
                if let through, through > (topics[topic]?.cursor ?? .max) { topics[topic]?.cursor = through }
                return
            }
            position = last.seq
        }
    }

    /// Delivers what the topic carries; the cursor moves past the rest too.
    private func deliver(_ events: [ChangeEvent], to topic: BusTopic) {
        guard let last = events.last else { return }
        topics[topic]?.cursor = last.seq
        let carried = events.filter { topic.carries($0.kind) }
        if !carried.isEmpty { sink.deliver(carried, to: topic) }
    }

    // MARK: Key changes

    /// LISTENs on the key channel for the node's `DeviceKeyCache`, which serves only while this
    /// LISTEN is active and forgets a tenant's keys at each ring (SQL/041). A node without a
    /// cache does not listen.
    private func watchKeys(on connection: PostgresConnection, generation: Int) {
        guard let keys = repository.deviceKeys else { return }
        keyWatch = Task {
            do {
                try await connection.listen(on: DeviceKeyCache.channel) { notifications in
                    self.keysListening(generation: generation)
                    for try await notification in notifications {
                        if let tenant = TenantID(notification.payload) {
                            keys.forget(tenant: tenant)
                        } else {
                            // TRUNCATE's ring, or one this node cannot read: forget every tenant.
                            if notification.payload != DeviceKeyCache.everyone {
                                self.logger.warning("unreadable notification on \(DeviceKeyCache.channel); forgetting every key")
                            }
                            keys.forgetAll()
                        }
                    }
                }
            } catch is CancellationError {
            } catch {
                self.logger.debug("listen on \(DeviceKeyCache.channel) ended: \(describeDatabaseError(error))")
            }
            self.keysEnded(generation: generation)
        }
    }

    /// The key LISTEN ended. On a connection still in use that would leave the cache serving
    /// without rings: stop it and reconnect, as a topic does.
    private func keysEnded(generation: Int) {
        guard self.generation == generation, let connection else { return }
        repository.deviceKeys?.setListening(false)
        connection.close().whenComplete { _ in }
    }

    private func keysListening(generation: Int) {
        guard self.generation == generation, connection != nil else { return }
        repository.deviceKeys?.setListening(true)
    }

    // MARK: Connection supervision

    public func run() async throws {
        var backoff = Duration.milliseconds(100)
        while !(Task.isCancelled || Task.isShuttingDownGracefully) {
            do {
                let connection = try await connect()
                connected(connection)
                let since = ContinuousClock.now
                defer {
                    // Only a connection that stayed up resets the backoff: one that fails right
                    // after connecting (LISTEN or catch-up errors) must not reconnect every 100 ms.
                    if ContinuousClock.now - since > .seconds(10) { backoff = .milliseconds(100) }
                }
                try await watch(connection)
            } catch is CancellationError {
            } catch {
                logger.warning("listener connection failed: \(describeDatabaseError(error))")
            }
            disconnected()
            if (Task.isCancelled || Task.isShuttingDownGracefully) { break }
            onDisconnect()
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
        // Stopped for good: fail waiting subscribers once (their timers then find nothing) and
        // refuse new ones.
        stopped = true
        let remaining = topics
        topics = [:]
        for (_, state) in remaining {
            state.consumer?.cancel()
            for waiter in state.waiters.values { waiter.resume(throwing: APIError.unavailable("the server is shutting down")) }
        }
    }

    /// Opens the listening connection, giving up after 15 s (a connect that hangs would stall the
    /// supervisor, and with it shutdown). A connection that arrives after that is closed.
    private func connect() async throws -> PostgresConnection {
        let configuration = try settings.connectionConfiguration(applicationName: "pgtrack-listener")
        let (id, logger) = (generation + 1, self.logger)
        let opened = Mutex<PostgresConnection?>(nil)
        let abandoned = Mutex(false)
        do {
            return try await withDeadline(.seconds(15), "connecting the listener") {
                let connection = try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
                let late = abandoned.withLock { gaveUp in
                    if !gaveUp { opened.withLock { $0 = connection } }
                    return gaveUp
                }
                if late { connection.close().whenComplete { _ in } }
                return connection
            }
        } catch {
            abandoned.withLock { $0 = true }
            opened.withLock { $0 }?.close().whenComplete { _ in }
            throw error
        }
    }

    private func connected(_ connection: PostgresConnection) {
        generation += 1
        if generation > 1 { reconnects += 1 }
        self.connection = connection
        logger.info("listener connected", metadata: ["topics": "\(topics.count)"])
        watchKeys(on: connection, generation: generation)
        for topic in topics.keys {
            startConsumer(for: topic, on: connection, generation: generation)
        }
    }

    private func disconnected() {
        connection = nil
        keyWatch?.cancel()
        keyWatch = nil
        repository.deviceKeys?.setListening(false)
        for topic in Array(topics.keys) {
            topics[topic]?.consumer?.cancel()
            topics[topic]?.consumer = nil
            topics[topic]?.ready = false
        }
    }

    /// Returns when the connection closes, a ping fails, or the service is shut down.
    private func watch(_ connection: PostgresConnection) async throws {
        let interval = pingInterval
        let logger = self.logger
        // closeFuture ignores task cancellation: closing the connection is what ends the watch,
        // on graceful shutdown, on plain cancellation, and when a ping fails.
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await connection.closeFuture.get() }
                    group.addTask {
                        // A half-open TCP connection never errors by itself: a ping that gets no
                        // answer within the interval counts as a dead connection. The ping is not
                        // awaited past its deadline: a query sent as the socket closes may never
                        // complete, and waiting for it would keep run() from ever returning.
                        while true {
                            try await Task.sleep(for: interval)
                            do {
                                try await withDeadline(interval, "the listener ping") {
                                    _ = try await connection.query("SELECT 1", logger: logger)
                                }
                            } catch is CancellationError {
                                throw CancellationError()
                            } catch {
                                // Closing fails anything still pending on the connection.
                                connection.close().whenComplete { _ in }
                                throw PingTimeout()
                            }
                        }
                    }
                    defer {
                        group.cancelAll()
                        connection.close().whenComplete { _ in }
                    }
                    _ = try await group.next()
                }
            } onGracefulShutdown: {
                connection.close().whenComplete { _ in }
            }
        } onCancel: {
            connection.close().whenComplete { _ in }
        }
        try? await connection.close()
    }
}

struct PingTimeout: Error, CustomStringConvertible {
    var description: String { "the listener connection did not answer a ping" }
}
