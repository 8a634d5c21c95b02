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

/// One SSE client (what is written; `live` or `StreamConnection` drives it): snapshot or replay,
/// then live events from its mailbox, de-duplicated by seq
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

    var feed: StreamFeed { StreamFeed(topic: topic, repository: repository, snapshots: snapshots) }

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

    struct ViewerGone: Error {}

    /// Where an opened stream stands: what it may send and the subscription it reads.
    struct Progress {
        var viewer: StreamViewer
        var subscription: Subscription
        var sent: StreamProgress
        let slowConsumer = SlowConsumerRule()
    }

    /// Overflowed again soon after a reset: the stream is closed (see `SlowConsumerRule`).
    struct SlowConsumerClosed: Error, CustomStringConvertible {
        var description: String { "the stream client overflowed its buffer again within \(SlowConsumerRule.window) of a reset; closing" }
    }

    /// Writes the opening of the stream (the reconnect delay, then a snapshot, a replay or a
    /// reset). `subscription` went live at `liveSince`: a snapshot that started after that misses nothing.
    func open<Writer: ResponseBodyWriter>(subscription: Subscription, liveSince: ContinuousClock.Instant, viewer: StreamViewer,
              writer: inout Writer) async throws -> Progress {
        do {
            try await write(SSEFrame.retry(milliseconds: 2_000), to: &writer)
            var sent = StreamProgress(filter: viewer.filter)
            sent.reopen(at: try await begin(with: start, filter: viewer.filter, liveSince: liveSince, writer: &writer))
            return Progress(viewer: viewer, subscription: subscription, sent: sent)
        } catch {
            await subscription.cancel()
            throw error
        }
    }

    /// Live events until `ending` ends the stream, the viewer is deleted or writing fails; then
    /// the subscription is cancelled and the body finished. Every path ends the subscription.
    /// For a stream on a keep-alive connection, run by Hummingbird's task for the connection;
    /// a stream that opens its connection is written by `StreamConnection` instead.
    /// `closeConnection` ends the connection under a write that waits for a client that reads
    /// nothing: one that has not taken the reset `grace` after an overflow (see `SlowConsumerRule`).
    func live<Writer: ResponseBodyWriter>(_ progress: Progress, ending: Ending, writer: inout Writer, grace: Duration,
                                          closeConnection: @escaping @Sendable () -> Void) async throws {
        var progress = progress
        do {
            while ending.watch(progress.subscription.mailbox) {
                let mailbox = progress.subscription.mailbox
                let rule = progress.slowConsumer
                mailbox.onOverflow {
                    if rule.overflowSeen() { return closeConnection() }
                    Task {
                        try? await Task.sleep(for: grace)
                        if rule.resetStillPending { closeConnection() }
                    }
                }
                drain: for await signal in mailbox.signals {
                    // Overflowed: what is still buffered is stale; drop it and reset below.
                    if mailbox.overflowed { break drain }
                    mailbox.took(signal)
                    if case .recheck = signal {
                        try await recheckScope(&progress.sent, viewer: &progress.viewer, writer: &writer)
                    } else if let bytes = progress.sent.bytes(for: signal) {
                        try await writer.write(bytes)
                    }
                }
                guard mailbox.overflowed, !ending.ended else { break }
                // Thrown, not finished: a client that does not read would hold the final write
                // for ever; an error makes Hummingbird close the connection.
                guard progress.slowConsumer.resetAllowed() else { throw SlowConsumerClosed() }
                try await resynchronise(&progress, writer: &writer)
                progress.slowConsumer.resetWritten()
            }
        } catch is ViewerGone {
            // The user was deleted: the `closed` event is out; end the stream normally.
        } catch {
            await progress.subscription.cancel()
            throw error
        }
        await progress.subscription.cancel()
        try await writer.finish(nil)
    }

    /// Too slow to keep up: subscribe afresh, then start over from a snapshot. A scope change
    /// may have been dropped with the backlog, so re-read it too. Also a step of
    /// `StreamConnection`, run in a short task.
    func resynchronise<Writer: ResponseBodyWriter>(_ progress: inout Progress, writer: inout Writer) async throws {
        logger.info("stream client fell behind; sending reset", metadata: ["topic": "\(topic)"])
        let previous = progress.subscription
        progress.subscription = try await hub.subscribe(topics: previous.topics, consumer: previous.mailbox.consumer)
        let liveAgain = ContinuousClock.now
        await previous.cancel()
        if let user = progress.viewer.user {
            progress.viewer.filter = try await currentFilter(of: user, writer: &writer)
        }
        progress.sent.filter = progress.viewer.filter
        progress.sent.reopen(at: try await begin(with: .reset(reason: "slow_consumer"), filter: progress.viewer.filter,
                                                 liveSince: liveAgain, writer: &writer))
    }

    /// The viewer's scope may have changed: re-read it and, if what they may see changed, send
    /// `remove` / `add` for the difference as of a fresh snapshot.
    func recheckScope<Writer: ResponseBodyWriter>(_ progress: inout StreamProgress, viewer: inout StreamViewer, writer: inout Writer) async throws {
        guard let user = viewer.user else { return }
        let old = viewer.filter
        let new = try await currentFilter(of: user, writer: &writer)
        guard new != old else { return }
        let change = try await feed.scopeChange(from: old, to: new) { id, name, json in
            try await write(SSEFrame.event(id: id, name: name, data: json), to: &writer)
        }
        viewer.filter = new
        progress.changeFilter(to: new, asOf: change.seq, added: change.added)
        logger.debug("scope changed on an open stream", metadata: ["topic": "\(topic)", "added": "\(change.added.count)"])
    }

    /// The filter of a user as stored now; a deleted user gets `closed` and the stream ends.
    private func currentFilter<Writer: ResponseBodyWriter>(of user: UUID, writer: inout Writer) async throws -> StreamFilter {
        guard let record = try await repository.user(user, tenant: topic.tenant) else {
            try await write(SSEFrame.event(id: nil, name: "closed", data: #"{"type":"closed","reason":"user_deleted"}"#), to: &writer)
            throw ViewerGone()
        }
        return StreamFilter.forUser(role: record.role, scope: record.scope, device: record.deviceID)
    }

    /// Writes the opening of the stream and returns the seq it brings the client up to.
    private func begin<Writer: ResponseBodyWriter>(with start: StreamStart, filter: StreamFilter, liveSince: ContinuousClock.Instant,
                       writer: inout Writer) async throws -> Int64 {
        try await feed.open(start, filter: filter, liveSince: liveSince) { id, name, json in
            try await write(SSEFrame.event(id: id, name: name, data: json), to: &writer)
        }
    }

    private func write<Writer: ResponseBodyWriter>(_ text: String, to writer: inout Writer) async throws {
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
