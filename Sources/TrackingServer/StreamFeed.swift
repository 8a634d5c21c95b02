import Foundation
import NIOCore
import TrackingCore
import TrackingStore

/// What SSE streams and WebSocket rooms share: how a stream opens (snapshot, reset or replay
/// from the change log) and what a scope change sends (`remove` / `add`), each message handed
/// to `emit` as (SSE id, event name, JSON) for the transport to frame.
struct StreamFeed: Sendable {
    let topic: BusTopic
    let repository: TrackingRepository
    let snapshots: SnapshotCoalescer

    typealias Emit = (_ id: Int64?, _ name: String, _ json: String) async throws -> Void

    /// Emits the opening of the stream and returns the seq it brings the client up to.
    func open(_ start: StreamStart, filter: StreamFilter, liveSince: ContinuousClock.Instant, emit: Emit) async throws -> Int64 {
        switch start {
        case .snapshot:
            return try await snapshot(type: "snapshot", reason: nil, filter: filter, liveSince: liveSince, emit: emit)
        case .reset(let reason):
            return try await snapshot(type: "reset", reason: reason, filter: filter, liveSince: liveSince, emit: emit)
        case .replay(let after):
            var cursor = after
            while true {
                let page = try await repository.readLog(topic, after: cursor, limit: 1_000)
                for event in page where filter.allows(event.audience) {
                    try await emit(event.seq, event.kind, event.json)
                }
                guard let last = page.last else { return cursor }
                cursor = last.seq
                if page.count < 1_000 { return cursor }
            }
        }
    }

    private func snapshot(type: String, reason: String?, filter: StreamFilter, liveSince: ContinuousClock.Instant, emit: Emit) async throws -> Int64 {
        // Any snapshot that started after the subscription went live holds all this stream may
        // miss from the live feed; sharing one with other joiners is safe.
        guard let snapshot = try await snapshots.snapshot(of: topic, notBefore: liveSince) else {
            throw APIError.notFound("\(topic) does not exist")
        }
        let reasonField = reason.map { #","reason":"\#($0)""# } ?? ""
        if case .admin(let tenant) = topic {
            // An admin room holds no positions; it opens with the current replication lag.
            let lag = try await repository.syncLag(tenant: tenant)
            try await emit(snapshot.seq, type, #"{"type":"\#(type)","seq":\#(snapshot.seq)\#(reasonField),"cdc_lag":\#(lag)}"#)
            return snapshot.seq
        }
        try await emit(snapshot.seq, type, #"{"type":"\#(type)","seq":\#(snapshot.seq)\#(reasonField),"positions":\#(snapshot.positionsJSON(filter))}"#)
        return snapshot.seq
    }

    /// What changes when a viewer's filter goes from `old` to `new`: `remove` for devices no
    /// longer visible, `add` (with the position) for newly visible ones, as of a fresh snapshot.
    /// Returns that snapshot's seq and the devices added.
    func scopeChange(from old: StreamFilter, to new: StreamFilter, emit: Emit) async throws -> (seq: Int64, added: Set<UUID>) {
        guard let snapshot = try await snapshots.snapshot(of: topic, notBefore: .now) else {
            throw APIError.notFound("\(topic) does not exist")
        }
        var added = Set<UUID>()
        for entry in snapshot.entries {
            let device = entry.audience.device.uuidString.lowercased()
            switch (old.allows(entry.audience), new.allows(entry.audience)) {
            case (true, false):
                try await emit(nil, "remove", #"{"type":"remove","device_id":"\#(device)"}"#)
            case (false, true):
                try await emit(nil, "add", #"{"type":"add","device_id":"\#(device)","position":\#(entry.json)}"#)
                added.insert(entry.audience.device)
            default:
                break
            }
        }
        return (snapshot.seq, added)
    }
}

/// The live part of a stream: what has been sent and what may be.
struct StreamProgress {
    /// The last seq sent in order (the SSE id the client holds).
    var lastSent: Int64
    /// The seq the stream opened at: a coalesced update at or before it is already in the opening.
    var opened: Int64
    var filter: StreamFilter
    /// Devices that just became visible got an `add` as of `through`: their older events,
    /// still queued, must not move them back.
    var suppressed: (through: Int64, devices: Set<UUID>)?

    init(filter: StreamFilter, openedAt seq: Int64 = 0) {
        lastSent = seq
        opened = seq
        self.filter = filter
    }

    mutating func reopen(at seq: Int64) {
        lastSent = seq
        opened = seq
        suppressed = nil
    }

    mutating func shouldSend(_ delivery: BusDelivery) -> Bool {
        if delivery.coalesced {
            // Released late by the throttle, after later events: newer than the opening is enough.
            guard delivery.seq > opened else { return false }
        } else {
            guard delivery.seq > lastSent else { return false }  // already sent by snapshot/replay
            lastSent = delivery.seq
        }
        guard filter.allows(delivery.audience) else { return false }
        if let held = suppressed {
            if delivery.seq > held.through {
                suppressed = nil
            } else if let device = delivery.audience?.device, held.devices.contains(device) {
                return false
            }
        }
        return true
    }

    /// Applies a scope change computed by `StreamFeed.scopeChange`.
    mutating func changeFilter(to new: StreamFilter, asOf seq: Int64, added: Set<UUID>) {
        filter = new
        guard !added.isEmpty else { return }
        suppressed = (max(seq, suppressed?.through ?? 0), added.union(suppressed?.devices ?? []))
    }
}

/// WebSocket room names and messages.
extension BusTopic {
    /// The room a WebSocket client joins for this topic.
    var roomName: String {
        switch self {
        case .tenant(let tenant): return "tenant:\(tenant.rawValue)"
        case .booking(_, let booking): return "booking:\(booking.rawValue)"
        case .user(_, let user): return "user:\(user.uuidString.lowercased())"
        case .admin(let tenant): return "admin:\(tenant.rawValue)"
        }
    }
}

enum RoomMessage {
    /// `json` (an object) with `"room"` as its first member. Room names hold only id characters.
    static func tagged(_ json: String, room: String) -> String {
        guard json.first == "{" else { return json }
        let rest = json.dropFirst().drop { $0 == " " }
        return rest.first == "}" ? #"{"room":"\#(room)"}"# : #"{"room":"\#(room)","# + rest
    }
}

extension StreamProgress {
    private static let heartbeat = ByteBuffer(string: SSEFrame.comment("heartbeat"))

    /// What an SSE stream writes for `signal`: its events this viewer may see and has not had
    /// (a batch as one buffer), a heartbeat comment, or nothing. `.recheck` is the caller's.
    mutating func bytes(for signal: SessionSignal) -> ByteBuffer? {
        switch signal {
        case .event(let delivery):
            return shouldSend(delivery) ? delivery.frame : nil
        case .events(let deliveries):
            var frames = ByteBuffer()
            for delivery in deliveries where shouldSend(delivery) {
                var frame = delivery.frame
                frames.writeBuffer(&frame)
            }
            return frames.readableBytes > 0 ? frames : nil
        case .heartbeat:
            return Self.heartbeat
        case .recheck, .client:
            return nil  // SSE has no client messages
        }
    }
}
