import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TrackingCore
import TrackingStore

/// One event as every subscriber receives it: its frames are built once per event, not once
/// per subscriber, and shared by all of them (ByteBuffer is copy-on-write).
public struct BusDelivery: Sendable {
    public let seq: Int64
    public let topic: BusTopic
    public let kind: String
    /// The SSE frame (no `id:` when coalesced).
    public let frame: ByteBuffer
    /// The WebSocket text message for the topic's own room, when a WebSocket client listens.
    public let message: ByteBuffer?
    /// The event's JSON, for WebSocket rooms named differently from the topic (device rooms).
    public let json: String
    /// Who the event is about, so each session keeps only what its subscriber may see.
    public let audience: EventAudience?
    /// A throttled update released after later events: it carries no SSE id, and a session
    /// sends it if it is newer than what the session opened with (see BroadcastThrottle).
    public let coalesced: Bool

    public init(event: ChangeEvent, topic: BusTopic, coalesced: Bool = false, sse: Bool = true, websocket: Bool = false) {
        seq = event.seq
        self.topic = topic
        kind = event.kind
        json = event.json
        audience = event.audience
        self.coalesced = coalesced
        frame = sse ? ByteBuffer(string: SSEFrame.event(id: coalesced ? nil : event.seq, name: event.kind, data: event.json)) : ByteBuffer()
        message = websocket ? ByteBuffer(string: RoomMessage.tagged(event.json, room: topic.roomName)) : nil
    }
}

/// What a stream session waits on.
public enum SessionSignal: Sendable {
    case event(BusDelivery)
    /// The events of one topic that one notification brought (typically one commit), in seq
    /// order: a session writes them with one write instead of one wake-up and write each.
    case events([BusDelivery])
    case heartbeat
    /// The subscriber's scope or role may have changed: re-read it.
    case recheck
    /// A message from a WebSocket client (join, leave, resume), queued behind the events
    /// before it so one loop writes everything.
    case client(String)
}

/// Takes a mailbox's signals as they are pushed, instead of a task reading `signals`: an SSE
/// connection served on its event loop (`StreamConnection`), which holds no task while idle.
/// Called on the pushing thread; the consumer hops to its own.
public protocol MailboxConsumer: AnyObject, Sendable {
    /// `signal` arrived in `mailbox`; the consumer calls `mailbox.took(_:)` once it has handled it.
    func mailbox(_ mailbox: Mailbox, received signal: SessionSignal)
    /// `mailbox` closed: cancelled, shut down, or overflowed (`mailbox.overflowed`). Called once.
    func mailboxClosed(_ mailbox: Mailbox)
}

/// A subscriber's bounded inbox. When it is full the subscriber is too slow: the inbox closes
/// and is marked overflowed, and the session resynchronises from a snapshot. Nothing upstream
/// ever waits for a subscriber. The bound counts events (a batch counts each of its events) as
/// well as signals: sessions report what they took with `took(_:)`.
public final class Mailbox: Sendable {
    public enum Transport: Sendable { case sse, websocket }

    public let signals: AsyncStream<SessionSignal>
    let continuation: AsyncStream<SessionSignal>.Continuation
    let transport: Transport
    let capacity: Int
    /// When set, signals go to it and `signals` stays empty.
    let consumer: (any MailboxConsumer)?
    private let overflowFlag = Atomic<Bool>(false)
    private let closedFlag = Atomic<Bool>(false)
    /// Called once, at the first overflow (see `onOverflow`).
    private let overflowHook = Mutex<(@Sendable () -> Void)?>(nil)
    /// Events pushed and not yet taken by the session.
    private let pendingEvents = Atomic<Int>(0)

    init(capacity: Int, transport: Transport = .sse, consumer: (any MailboxConsumer)? = nil) {
        (signals, continuation) = AsyncStream.makeStream(of: SessionSignal.self, bufferingPolicy: .bufferingOldest(capacity))
        self.transport = transport
        self.capacity = capacity
        self.consumer = consumer
    }

    public var overflowed: Bool { overflowFlag.load(ordering: .acquiring) }

    func push(_ delivery: BusDelivery) {
        push(.event(delivery))
    }

    /// The events of one notification, as one signal when there are several.
    func push(_ deliveries: [BusDelivery]) {
        guard deliveries.count > 1 else {
            if let delivery = deliveries.first { push(.event(delivery)) }
            return
        }
        push(.events(deliveries))
    }

    /// A full inbox overflows whatever the signal: the reset that follows re-reads everything.
    func push(_ signal: SessionSignal) {
        let events = Self.eventCount(signal)
        if events > 0, pendingEvents.add(events, ordering: .relaxed).newValue > capacity {
            overflow()
            return
        }
        if let consumer {
            if !closed { consumer.mailbox(self, received: signal) }
            return
        }
        if case .dropped = continuation.yield(signal) { overflow() }
    }

    private func overflow() {
        overflowFlag.store(true, ordering: .releasing)
        close()
        overflowHook.withLock { hook in
            defer { hook = nil }
            return hook
        }?()
    }

    /// Runs `hook` at the first overflow, on the thread that pushed: for a session that may be
    /// stuck writing to a client that does not read, and so cannot notice it itself.
    func onOverflow(_ hook: @escaping @Sendable () -> Void) {
        overflowHook.withLock { $0 = hook }
        if overflowed { overflowHook.withLock { hook in defer { hook = nil }; return hook }?() }
    }

    private var closed: Bool { closedFlag.load(ordering: .acquiring) }

    /// The session took `signal` out of the inbox: its events no longer count against the bound.
    public func took(_ signal: SessionSignal) {
        let events = Self.eventCount(signal)
        if events > 0 { pendingEvents.subtract(events, ordering: .relaxed) }
    }

    static func eventCount(_ signal: SessionSignal) -> Int {
        switch signal {
        case .event: 1
        case .events(let deliveries): deliveries.count
        case .heartbeat, .recheck, .client: 0
        }
    }

    func heartbeat() {
        if let consumer {
            if !closed { consumer.mailbox(self, received: .heartbeat) }
            return
        }
        _ = continuation.yield(.heartbeat)  // a full inbox needs no heartbeat
    }

    public func close() {
        continuation.finish()
        if !closedFlag.exchange(true, ordering: .acquiringAndReleasing) { consumer?.mailboxClosed(self) }
    }
}

/// A live subscription: events of its topics arrive in one `mailbox`, in order per topic. Cancel
/// it when the session ends.
public struct Subscription: Sendable {
    public let topics: [BusTopic]
    public let mailbox: Mailbox
    let id: UInt64
    let hub: FanOutHub
    /// False when the mailbox belongs to a longer-lived session (a WebSocket's rooms): then
    /// cancelling stops deliveries but leaves the mailbox open.
    let ownsMailbox: Bool

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
        var throttle: BroadcastThrottle?
    }

    private let state: Mutex<State>
    let mailboxCapacity: Int
    let heartbeatInterval: Duration
    /// Per-device broadcast interval (nil: every update is pushed).
    let minBroadcastInterval: Duration?
    let logger: Logger
    /// Set once at startup (the listener needs the hub as its sink, the hub needs the listener).
    private let listenerBox = Mutex<NotificationListener?>(nil)

    public init(mailboxCapacity: Int = 2_048, heartbeatInterval: Duration = .seconds(15), minBroadcastInterval: Duration? = nil,
                logger: Logger) {
        self.mailboxCapacity = mailboxCapacity
        self.heartbeatInterval = heartbeatInterval
        self.minBroadcastInterval = minBroadcastInterval
        self.logger = logger
        state = Mutex(State(throttle: minBroadcastInterval.map { BroadcastThrottle(interval: $0) }))
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

    /// `into` adds the topics to a mailbox the caller keeps (a WebSocket session's); otherwise
    /// the subscription gets its own.
    /// `consumer` takes the new mailbox's signals as they arrive (see `MailboxConsumer`).
    public func subscribe(topics: [BusTopic], into existing: Mailbox? = nil,
                          consumer: (any MailboxConsumer)? = nil) async throws -> Subscription {
        precondition(!topics.isEmpty, "subscribe to at least one topic")
        let mailbox = existing ?? Mailbox(capacity: mailboxCapacity, consumer: consumer)
        let id: UInt64 = try state.withLock { state in
            guard !state.shuttingDown else { throw APIError.unavailable("the server is shutting down") }
            state.nextID += 1
            for topic in topics { state.subscribers[topic, default: [:]][state.nextID] = mailbox }
            return state.nextID
        }
        let subscription = Subscription(topics: topics, mailbox: mailbox, id: id, hub: self, ownsMailbox: existing == nil)
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
        if subscription.ownsMailbox { subscription.mailbox.close() }
    }

    /// A mailbox for a session that subscribes and unsubscribes topics as it goes.
    public func makeMailbox(transport: Mailbox.Transport, consumer: (any MailboxConsumer)? = nil) -> Mailbox {
        Mailbox(capacity: mailboxCapacity, transport: transport, consumer: consumer)
    }

    public func deliver(_ events: [ChangeEvent], to topic: BusTopic) {
        let (mailboxes, releases) = state.withLock { state -> ([Mailbox], [BroadcastThrottle.Release]) in
            let mailboxes = Array((state.subscribers[topic] ?? [:]).values)
            guard !mailboxes.isEmpty else { return ([], []) }
            if case .user = topic { return (mailboxes, []) }
            guard state.throttle != nil else { return (mailboxes, events.map { .init(event: $0, coalesced: false) }) }
            return (mailboxes, state.throttle!.offer(events, topic: topic, now: .now))
        }
        guard !mailboxes.isEmpty else { return }
        if case .user = topic {
            for mailbox in mailboxes { mailbox.push(.recheck) }
            return
        }
        push(releases, of: topic, to: mailboxes)
    }

    private func push(_ releases: [BroadcastThrottle.Release], of topic: BusTopic, to mailboxes: [Mailbox]) {
        let sse = mailboxes.contains { $0.transport == .sse }
        let websocket = mailboxes.contains { $0.transport == .websocket }
        let deliveries = releases.map {
            BusDelivery(event: $0.event, topic: topic, coalesced: $0.coalesced, sse: sse, websocket: websocket)
        }
        for mailbox in mailboxes { mailbox.push(deliveries) }
    }

    /// Pushes held updates whose interval has passed (the throttle's one timer per node).
    func releaseDueUpdates() {
        let due = state.withLock { state -> [(BusTopic, BroadcastThrottle.Release, [Mailbox])] in
            guard state.throttle != nil else { return [] }
            return state.throttle!.due(now: .now).compactMap { topic, release in
                guard let mailboxes = state.subscribers[topic], !mailboxes.isEmpty else { return nil }
                return (topic, release, Array(mailboxes.values))
            }
        }
        for (topic, release, mailboxes) in due { push([release], of: topic, to: mailboxes) }
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

    /// The heartbeat timer and the throttle's release timer; on shutdown, closes every stream.
    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    while true {
                        try await Task.sleep(for: self.heartbeatInterval)
                        let mailboxes = self.state.withLock { state in
                            state.subscribers.filter { if case .user = $0.key { return false } else { return true } }.values.flatMap(\.values)
                        }
                        for mailbox in mailboxes { mailbox.heartbeat() }
                    }
                }
                if let interval = self.minBroadcastInterval {
                    // A held update is late by at most this tick.
                    let tick = min(max(interval / 20, .milliseconds(5)), .milliseconds(50))
                    group.addTask {
                        while true {
                            try await Task.sleep(for: tick)
                            self.releaseDueUpdates()
                        }
                    }
                }
                try await group.next()
            }
        }
        closeAll()
    }
}
