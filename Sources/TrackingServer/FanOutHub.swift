import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TrackingCore
import TrackingStore

/// One event as every subscriber receives it: the SSE frame is built once per event, not once
/// per subscriber, and shared by all of them (ByteBuffer is copy-on-write).
public struct BusDelivery: Sendable {
    public let seq: Int64
    public let frame: ByteBuffer
}

/// What a stream session waits on.
public enum SessionSignal: Sendable {
    case event(BusDelivery)
    case heartbeat
}

/// A subscriber's bounded inbox. When it is full the subscriber is too slow: the inbox closes
/// and is marked overflowed, and the session resynchronises from a snapshot. Nothing upstream
/// ever waits for a subscriber.
public final class Mailbox: Sendable {
    public let signals: AsyncStream<SessionSignal>
    let continuation: AsyncStream<SessionSignal>.Continuation
    private let overflowFlag = Atomic<Bool>(false)

    init(capacity: Int) {
        (signals, continuation) = AsyncStream.makeStream(of: SessionSignal.self, bufferingPolicy: .bufferingOldest(capacity))
    }

    public var overflowed: Bool { overflowFlag.load(ordering: .acquiring) }

    func push(_ delivery: BusDelivery) {
        if case .dropped = continuation.yield(.event(delivery)) {
            overflowFlag.store(true, ordering: .releasing)
            continuation.finish()
        }
    }

    func heartbeat() {
        _ = continuation.yield(.heartbeat)  // a full inbox needs no heartbeat
    }

    public func close() { continuation.finish() }
}

/// A live subscription: events of `topic` arrive in `mailbox`. Cancel it when the session ends.
public struct Subscription: Sendable {
    public let topic: BusTopic
    public let mailbox: Mailbox
    let id: UInt64
    let hub: FanOutHub

    public func cancel() async {
        await hub.unsubscribe(self)
    }
}

/// In-process fan-out: the listener delivers each topic's events once; the hub frames them once
/// and pushes them into every local subscriber's mailbox. Also the node's single heartbeat timer.
public final class FanOutHub: BusEventSink, Service {
    struct State {
        var subscribers: [BusTopic: [UInt64: Mailbox]] = [:]
        var nextID: UInt64 = 0
        var shuttingDown = false
    }

    private let state = Mutex(State())
    let mailboxCapacity: Int
    let heartbeatInterval: Duration
    let logger: Logger
    /// Set once at startup (the listener needs the hub as its sink, the hub needs the listener).
    private let listenerBox = Mutex<NotificationListener?>(nil)

    public init(mailboxCapacity: Int = 2_048, heartbeatInterval: Duration = .seconds(15), logger: Logger) {
        self.mailboxCapacity = mailboxCapacity
        self.heartbeatInterval = heartbeatInterval
        self.logger = logger
    }

    public func attach(_ listener: NotificationListener) {
        listenerBox.withLock { $0 = listener }
    }

    var listener: NotificationListener {
        guard let listener = listenerBox.withLock({ $0 }) else { preconditionFailure("FanOutHub used before attach(listener:)") }
        return listener
    }

    public var subscriberCount: Int {
        state.withLock { $0.subscribers.values.reduce(0) { $0 + $1.count } }
    }

    /// Registers a mailbox, then waits until the listener LISTENs to the topic. The mailbox is
    /// registered first, so an event committed after this returns is never missed; whatever
    /// happened before is for the caller to read from the snapshot or the log.
    public func subscribe(_ topic: BusTopic) async throws -> Subscription {
        let mailbox = Mailbox(capacity: mailboxCapacity)
        let id: UInt64 = try state.withLock { state in
            guard !state.shuttingDown else { throw APIError.unavailable("the server is shutting down") }
            state.nextID += 1
            state.subscribers[topic, default: [:]][state.nextID] = mailbox
            return state.nextID
        }
        let subscription = Subscription(topic: topic, mailbox: mailbox, id: id, hub: self)
        do {
            try await listener.subscribe(topic)
        } catch is CancellationError {
            removeMailbox(subscription)
            throw APIError.unavailable("the subscription was interrupted; retry")
        } catch {
            removeMailbox(subscription)
            throw error
        }
        return subscription
    }

    func unsubscribe(_ subscription: Subscription) async {
        removeMailbox(subscription)
        await listener.unsubscribe(subscription.topic)
    }

    private func removeMailbox(_ subscription: Subscription) {
        state.withLock { state in
            state.subscribers[subscription.topic]?[subscription.id] = nil
            if state.subscribers[subscription.topic]?.isEmpty == true { state.subscribers[subscription.topic] = nil }
        }
        subscription.mailbox.close()
    }

    public func deliver(_ events: [ChangeEvent], to topic: BusTopic) {
        let mailboxes = state.withLock { Array(($0.subscribers[topic] ?? [:]).values) }
        guard !mailboxes.isEmpty else { return }
        for event in events {
            let delivery = BusDelivery(seq: event.seq, frame: ByteBuffer(string: SSEFrame.event(id: event.seq, name: event.kind, data: event.json)))
            for mailbox in mailboxes { mailbox.push(delivery) }
        }
    }

    /// Closes every mailbox: open streams end and their connections close.
    public func closeAll() {
        let mailboxes = state.withLock { state in
            state.shuttingDown = true
            return state.subscribers.values.flatMap(\.values)
        }
        for mailbox in mailboxes { mailbox.close() }
    }

    /// The heartbeat timer; on shutdown, closes every stream.
    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while true {
                try await Task.sleep(for: self.heartbeatInterval)
                let mailboxes = self.state.withLock { $0.subscribers.values.flatMap(\.values) }
                for mailbox in mailboxes { mailbox.heartbeat() }
            }
        }
        closeAll()
    }
}
