import Foundation
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
    /// Who the event is about, so each session keeps only what its subscriber may see.
    public let audience: EventAudience?

    public init(seq: Int64, frame: ByteBuffer, audience: EventAudience? = nil) {
        self.seq = seq
        self.frame = frame
        self.audience = audience
    }
}

/// What a stream session waits on.
public enum SessionSignal: Sendable {
    case event(BusDelivery)
    case heartbeat
    /// The subscriber's scope or role may have changed: re-read it.
    case recheck
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
        push(.event(delivery))
    }

    /// A full inbox overflows whatever the signal: the reset that follows re-reads everything.
    func push(_ signal: SessionSignal) {
        if case .dropped = continuation.yield(signal) {
            overflowFlag.store(true, ordering: .releasing)
            continuation.finish()
        }
    }

    func heartbeat() {
        _ = continuation.yield(.heartbeat)  // a full inbox needs no heartbeat
    }

    public func close() { continuation.finish() }
}

/// A live subscription: events of its topics arrive in one `mailbox`, in order per topic. Cancel
/// it when the session ends.
public struct Subscription: Sendable {
    public let topics: [BusTopic]
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

    /// Open subscriptions (a session on a tenant stream with a user topic counts once).
    public var subscriberCount: Int {
        state.withLock { state in
            state.subscribers.reduce(0) { count, entry in
                if case .user = entry.key { return count }
                return count + entry.value.count
            }
        }
    }

    /// Registers one mailbox for `topics`, then waits until the listener LISTENs to each. The
    /// mailbox is registered first, so an event committed after this returns is never missed;
    /// whatever happened before is for the caller to read from the snapshot or the log.
    public func subscribe(_ topics: BusTopic...) async throws -> Subscription {
        try await subscribe(topics: topics)
    }

    public func subscribe(topics: [BusTopic]) async throws -> Subscription {
        precondition(!topics.isEmpty, "subscribe to at least one topic")
        let mailbox = Mailbox(capacity: mailboxCapacity)
        let id: UInt64 = try state.withLock { state in
            guard !state.shuttingDown else { throw APIError.unavailable("the server is shutting down") }
            state.nextID += 1
            for topic in topics { state.subscribers[topic, default: [:]][state.nextID] = mailbox }
            return state.nextID
        }
        let subscription = Subscription(topics: topics, mailbox: mailbox, id: id, hub: self)
        var listening: [BusTopic] = []
        do {
            for topic in topics {
                try await listener.subscribe(topic)
                listening.append(topic)
            }
        } catch {
            removeMailbox(subscription)
            for topic in listening { await listener.unsubscribe(topic) }
            if error is CancellationError { throw APIError.unavailable("the subscription was interrupted; retry") }
            throw error
        }
        return subscription
    }

    func unsubscribe(_ subscription: Subscription) async {
        removeMailbox(subscription)
        for topic in subscription.topics { await listener.unsubscribe(topic) }
    }

    private func removeMailbox(_ subscription: Subscription) {
        state.withLock { state in
            for topic in subscription.topics {
                state.subscribers[topic]?[subscription.id] = nil
                if state.subscribers[topic]?.isEmpty == true { state.subscribers[topic] = nil }
            }
        }
        subscription.mailbox.close()
    }

    public func deliver(_ events: [ChangeEvent], to topic: BusTopic) {
        let mailboxes = state.withLock { Array(($0.subscribers[topic] ?? [:]).values) }
        guard !mailboxes.isEmpty else { return }
        if case .user = topic {
            for mailbox in mailboxes { mailbox.push(.recheck) }
            return
        }
        for event in events {
            let delivery = BusDelivery(seq: event.seq, frame: ByteBuffer(string: SSEFrame.event(id: event.seq, name: event.kind, data: event.json)),
                                       audience: event.audience)
            for mailbox in mailboxes { mailbox.push(delivery) }
        }
    }

    /// Closes every mailbox: open streams end and their connections close.
    public func closeAll() {
        let mailboxes = state.withLock { state in
            state.shuttingDown = true
            return state.subscribers.values.flatMap(\.values)
        }
        // A mailbox registered under two topics is closed twice; closing is idempotent.
        for mailbox in mailboxes { mailbox.close() }
    }

    /// The heartbeat timer; on shutdown, closes every stream.
    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while true {
                try await Task.sleep(for: self.heartbeatInterval)
                let mailboxes = self.state.withLock { state in
                    state.subscribers.filter { if case .user = $0.key { return false } else { return true } }.values.flatMap(\.values)
                }
                for mailbox in mailboxes { mailbox.heartbeat() }
            }
        }
        closeAll()
    }
}
