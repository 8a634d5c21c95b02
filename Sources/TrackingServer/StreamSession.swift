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

/// One SSE client: snapshot or replay, then live events from its mailbox, de-duplicated by seq;
/// a heartbeat comment every 15 s; on mailbox overflow a `reset` with a fresh snapshot.
struct StreamSession {
    let topic: BusTopic
    let start: StreamStart
    let hub: FanOutHub
    let repository: TrackingRepository
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

    func run(subscription first: Subscription, request: Request, writer: inout any ResponseBodyWriter) async throws {
        let ending = Ending()
        var subscription = first
        do {
            try await stream(subscription: &subscription, ending: ending, request: request, writer: &writer)
        } catch {
            await subscription.cancel()
            throw error
        }
        await subscription.cancel()
        try await writer.finish(nil)
    }

    private func stream(subscription: inout Subscription, ending: Ending, request: Request,
                        writer: inout any ResponseBodyWriter) async throws {
        try await withGracefulShutdownHandler {
            try await request.body.consumeWithInboundCloseHandler { _ in
                try await write(SSEFrame.retry(milliseconds: 2_000), to: &writer)
                var lastSent = try await begin(with: start, writer: &writer)
                while ending.watch(subscription.mailbox) {
                    drain: for await signal in subscription.mailbox.signals {
                        switch signal {
                        case .event(let delivery):
                            // Overflowed: what is still buffered is stale; drop it and reset below.
                            if subscription.mailbox.overflowed { break drain }
                            guard delivery.seq > lastSent else { continue }  // already sent by snapshot/replay
                            try await writer.write(delivery.frame)
                            lastSent = delivery.seq
                        case .heartbeat:
                            try await write(SSEFrame.comment("heartbeat"), to: &writer)
                        }
                    }
                    guard subscription.mailbox.overflowed, !ending.ended else { break }
                    // Too slow to keep up: subscribe afresh, then start over from a snapshot.
                    logger.info("stream client fell behind; sending reset", metadata: ["topic": "\(topic)"])
                    let previous = subscription
                    subscription = try await hub.subscribe(topic)
                    await previous.cancel()
                    lastSent = try await begin(with: .reset(reason: "slow_consumer"), writer: &writer)
                }
            } onInboundClosed: {
                ending.end()
            }
        } onGracefulShutdown: {
            ending.end()
        }
    }

    /// Writes the opening of the stream and returns the seq it brings the client up to.
    private func begin(with start: StreamStart, writer: inout any ResponseBodyWriter) async throws -> Int64 {
        switch start {
        case .snapshot:
            return try await writeSnapshot(type: "snapshot", reason: nil, writer: &writer)
        case .reset(let reason):
            return try await writeSnapshot(type: "reset", reason: reason, writer: &writer)
        case .replay(let after):
            var cursor = after
            while true {
                let page = try await repository.readLog(topic, after: cursor, limit: 1_000)
                for event in page {
                    try await write(SSEFrame.event(id: event.seq, name: event.kind, data: event.json), to: &writer)
                }
                guard let last = page.last else { return cursor }
                cursor = last.seq
                if page.count < 1_000 { return cursor }
            }
        }
    }

    private func writeSnapshot(type: String, reason: String?, writer: inout any ResponseBodyWriter) async throws -> Int64 {
        guard let snapshot = try await repository.snapshot(of: topic) else {
            throw APIError.notFound("\(topic) does not exist")
        }
        let reasonField = reason.map { #","reason":"\#($0)""# } ?? ""
        let data = #"{"type":"\#(type)","seq":\#(snapshot.seq)\#(reasonField),"positions":\#(snapshot.positionsJSON)}"#
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
