import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TrackingCore
import TrackingStore

/// Where a stream starts: a fresh snapshot, a replay after a seq the client already has, or a
/// reset (a snapshot flagged as such) when the client's position cannot be resumed.
enum StreamStart: Equatable {
    case snapshot
    case replay(after: Int64)
    case reset(reason: String)

    /// From `Last-Event-ID` (or `?since=`): a number the log still holds resumes; anything
    /// else (garbage, from the future, pruned) resets, so a client is never left on a stuck stream.
    static func decide(requested: String?, bounds: LogBounds) -> StreamStart {
        guard let requested else { return .snapshot }
        guard let seq = Int64(requested.trimmingWhitespaceForHeader()), seq >= 0 else { return .reset(reason: "invalid_event_id") }
        if seq > bounds.lastSeq { return .reset(reason: "unknown_event_id") }
        if seq < bounds.prunedThrough { return .reset(reason: "history_expired") }
        return .replay(after: seq)
    }
}

/// Who is watching a stream: what they may see now, and for a user, whose scope to re-read
/// when it changes.
struct StreamViewer: Sendable {
    var filter: StreamFilter
    let user: UUID?
}

/// One SSE client: snapshot or replay, then live events from its mailbox, de-duplicated by seq
/// and filtered by what the viewer may see; a heartbeat comment every 15 s; on mailbox overflow
/// a `reset` with a fresh snapshot. When the viewer's scope changes the session sends `remove`
/// for devices no longer visible and `add` for newly visible ones, without replaying history.
struct StreamSession {
    let topic: BusTopic
    let start: StreamStart
    let hub: FanOutHub
    let repository: TrackingRepository
    let snapshots: SnapshotCoalescer
    let logger: Logger

    /// Ends the session from outside (client gone, server shutting down).
    final class Ending: Sendable {
        private let state = Mutex<(ended: Bool, mailbox: Mailbox?)>((false, nil))
        var ended: Bool { state.withLock { $0.ended } }
        func watch(_ mailbox: Mailbox) -> Bool {
            state.withLock { state in
                state.mailbox = mailbox
                return !state.ended
            }
        }
        func end() {
            let mailbox = state.withLock { state -> Mailbox? in
                state.ended = true
                return state.mailbox
            }
            mailbox?.close()
        }
    }

    /// The live part of a session: what has been sent and what may be.
    struct Progress {
        var lastSent: Int64
        var viewer: StreamViewer
        /// Devices that just became visible got an `add` as of `through`: their older events,
        /// still queued, must not move them back.
        var suppressed: (through: Int64, devices: Set<UUID>)?

        mutating func shouldSend(_ delivery: BusDelivery) -> Bool {
            guard delivery.seq > lastSent else { return false }  // already sent by snapshot/replay
            lastSent = delivery.seq
            guard viewer.filter.allows(delivery.audience) else { return false }
            if let held = suppressed {
                if delivery.seq > held.through {
                    suppressed = nil
                } else if let device = delivery.audience?.device, held.devices.contains(device) {
                    return false
                }
            }
            return true
        }
    }

    struct ViewerGone: Error {}

    /// `first` went live at `liveSince`: a snapshot that started after that misses nothing.
    func run(subscription first: Subscription, liveSince: ContinuousClock.Instant, viewer: StreamViewer, request: Request,
             writer: inout any ResponseBodyWriter) async throws {
        let ending = Ending()
        var subscription = first
        do {
            try await stream(subscription: &subscription, liveSince: liveSince, viewer: viewer, ending: ending, request: request, writer: &writer)
        } catch is ViewerGone {
            // The user was deleted: the `closed` event is out; end the stream normally.
        } catch {
            await subscription.cancel()
            throw error
        }
        await subscription.cancel()
        try await writer.finish(nil)
    }

    private func stream(subscription: inout Subscription, liveSince: ContinuousClock.Instant, viewer: StreamViewer, ending: Ending, request: Request,
                        writer: inout any ResponseBodyWriter) async throws {
        try await withGracefulShutdownHandler {
            try await request.body.consumeWithInboundCloseHandler { _ in
                try await write(SSEFrame.retry(milliseconds: 2_000), to: &writer)
                var progress = Progress(lastSent: 0, viewer: viewer)
                progress.lastSent = try await begin(with: start, filter: viewer.filter, liveSince: liveSince, writer: &writer)
                while ending.watch(subscription.mailbox) {
                    drain: for await signal in subscription.mailbox.signals {
                        // Overflowed: what is still buffered is stale; drop it and reset below.
                        if subscription.mailbox.overflowed { break drain }
                        switch signal {
                        case .event(let delivery):
                            if progress.shouldSend(delivery) { try await writer.write(delivery.frame) }
                        case .heartbeat:
                            try await write(SSEFrame.comment("heartbeat"), to: &writer)
                        case .recheck:
                            try await recheckScope(&progress, writer: &writer)
                        }
                    }
                    guard subscription.mailbox.overflowed, !ending.ended else { break }
                    // Too slow to keep up: subscribe afresh, then start over from a snapshot. A
                    // scope change may have been dropped with the backlog, so re-read it too.
                    logger.info("stream client fell behind; sending reset", metadata: ["topic": "\(topic)"])
                    let previous = subscription
                    subscription = try await hub.subscribe(topics: previous.topics)
                    let liveAgain = ContinuousClock.now
                    await previous.cancel()
                    if let user = progress.viewer.user {
                        progress.viewer.filter = try await currentFilter(of: user, writer: &writer)
                    }
                    progress.suppressed = nil
                    progress.lastSent = try await begin(with: .reset(reason: "slow_consumer"), filter: progress.viewer.filter,
                                                        liveSince: liveAgain, writer: &writer)
                }
            } onInboundClosed: {
                ending.end()
            }
        } onGracefulShutdown: {
            ending.end()
        }
    }

    /// The viewer's scope may have changed: re-read it and, if what they may see changed, send
    /// `remove` / `add` for the difference as of a fresh snapshot.
    private func recheckScope(_ progress: inout Progress, writer: inout any ResponseBodyWriter) async throws {
        guard let user = progress.viewer.user else { return }
        let old = progress.viewer.filter
        let new = try await currentFilter(of: user, writer: &writer)
        guard new != old else { return }
        guard let snapshot = try await snapshots.snapshot(of: topic, notBefore: .now) else {
            throw APIError.notFound("\(topic) does not exist")
        }
        var added = Set<UUID>()
        for entry in snapshot.entries {
            let device = entry.audience.device.uuidString.lowercased()
            switch (old.allows(entry.audience), new.allows(entry.audience)) {
            case (true, false):
                try await write(SSEFrame.event(id: nil, name: "remove", data: #"{"type":"remove","device_id":"\#(device)"}"#), to: &writer)
            case (false, true):
                try await write(SSEFrame.event(id: nil, name: "add", data: #"{"type":"add","device_id":"\#(device)","position":\#(entry.json)}"#), to: &writer)
                added.insert(entry.audience.device)
            default:
                break
            }
        }
        progress.viewer.filter = new
        if !added.isEmpty {
            progress.suppressed = (max(snapshot.seq, progress.suppressed?.through ?? 0), added.union(progress.suppressed?.devices ?? []))
        }
        logger.debug("scope changed on an open stream", metadata: ["topic": "\(topic)", "added": "\(added.count)"])
    }

    /// The filter of a user as stored now; a deleted user gets `closed` and the stream ends.
    private func currentFilter(of user: UUID, writer: inout any ResponseBodyWriter) async throws -> StreamFilter {
        guard let record = try await repository.user(user, tenant: topic.tenant) else {
            try await write(SSEFrame.event(id: nil, name: "closed", data: #"{"type":"closed","reason":"user_deleted"}"#), to: &writer)
            throw ViewerGone()
        }
        return StreamFilter.forUser(role: record.role, scope: record.scope, device: record.deviceID)
    }

    /// Writes the opening of the stream and returns the seq it brings the client up to.
    private func begin(with start: StreamStart, filter: StreamFilter, liveSince: ContinuousClock.Instant,
                       writer: inout any ResponseBodyWriter) async throws -> Int64 {
        switch start {
        case .snapshot:
            return try await writeSnapshot(type: "snapshot", reason: nil, filter: filter, liveSince: liveSince, writer: &writer)
        case .reset(let reason):
            return try await writeSnapshot(type: "reset", reason: reason, filter: filter, liveSince: liveSince, writer: &writer)
        case .replay(let after):
            var cursor = after
            while true {
                let page = try await repository.readLog(topic, after: cursor, limit: 1_000)
                for event in page where filter.allows(event.audience) {
                    try await write(SSEFrame.event(id: event.seq, name: event.kind, data: event.json), to: &writer)
                }
                guard let last = page.last else { return cursor }
                cursor = last.seq
                if page.count < 1_000 { return cursor }
            }
        }
    }

    private func writeSnapshot(type: String, reason: String?, filter: StreamFilter, liveSince: ContinuousClock.Instant,
                               writer: inout any ResponseBodyWriter) async throws -> Int64 {
        // Any snapshot that started after the subscription went live holds all this stream may
        // miss from the live feed; sharing one with other joiners is safe.
        guard let snapshot = try await snapshots.snapshot(of: topic, notBefore: liveSince) else {
            throw APIError.notFound("\(topic) does not exist")
        }
        let reasonField = reason.map { #","reason":"\#($0)""# } ?? ""
        let data = #"{"type":"\#(type)","seq":\#(snapshot.seq)\#(reasonField),"positions":\#(snapshot.positionsJSON(filter))}"#
        try await write(SSEFrame.event(id: snapshot.seq, name: type, data: data), to: &writer)
        return snapshot.seq
    }

    private func write(_ text: String, to writer: inout any ResponseBodyWriter) async throws {
        try await writer.write(ByteBuffer(string: text))
    }
}

extension String {
    func trimmingWhitespaceForHeader() -> Substring {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}
