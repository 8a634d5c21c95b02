import Foundation
import Synchronization

/// What one viewer received, checked by seq (per stream) and by each device's fix number.
public struct StreamTally: Sendable {
    public enum Transport: String, Codable, Sendable { case sse, ws }

    public let transport: Transport
    /// Simulator device indexes this stream should see every fix of.
    public let devices: [Int]
    var lastSeq: Int64 = -1
    /// Per device index: highest fix number seen, and how many distinct fixes arrived.
    var lastNumber: [Int64]
    var received: [Int64]
    public internal(set) var events = 0
    public internal(set) var duplicates = 0
    public internal(set) var outOfOrder = 0
    public internal(set) var resets = 0
    public internal(set) var opened = false
    public internal(set) var failure: String?

    init(transport: Transport, devices: [Int], deviceCount: Int) {
        self.transport = transport
        self.devices = devices
        lastNumber = Array(repeating: 0, count: deviceCount)
        received = Array(repeating: 0, count: deviceCount)
    }

    /// A `snapshot` or `reset`: the stream (re)opened at `seq`.
    mutating func open(seq: Int64?, reset: Bool) {
        if reset { resets += 1 }
        opened = true
        if let seq { lastSeq = seq }
    }

    /// An event with a seq; returns false if it is a duplicate.
    mutating func event(seq: Int64?, fix: EventScan.SimFix?, latency: LatencyRecorder, now: Int64) {
        events += 1
        if let seq {
            if seq <= lastSeq { duplicates += 1; return }
            lastSeq = seq
        }
        guard let fix, fix.device >= 0, fix.device < lastNumber.count else { return }
        if fix.number <= lastNumber[fix.device] {
            if fix.number == lastNumber[fix.device] { duplicates += 1 } else { outOfOrder += 1 }
            return
        }
        lastNumber[fix.device] = fix.number
        received[fix.device] += 1
        latency.record(microseconds: now - fix.sentMicros)
    }

    /// Fixes accepted by the server for this stream's devices that never arrived.
    func lost(accepted: [Int64]) -> Int64 {
        devices.reduce(0) { $0 + max(0, accepted[$1] - received[$1]) }
    }

    func expected(accepted: [Int64]) -> Int64 {
        devices.reduce(0) { $0 + accepted[$1] }
    }

    /// True when every accepted fix of this stream's devices has arrived.
    func caughtUp(accepted: [Int64]) -> Bool {
        devices.allSatisfy { received[$0] >= accepted[$0] }
    }
}

/// Live counters for progress lines.
public final class LoadCounters: Sendable {
    public let posts = Atomic<Int>(0)
    public let postErrors = Atomic<Int>(0)
    /// Driver ticks that made no post: the driver was still waiting for an answer with a post
    /// already due, or its loop was more than a tick late.
    public let skippedTicks = Atomic<Int>(0)
    public let positions = Atomic<Int>(0)
    public let deliveries = Atomic<Int>(0)
    public let duplicates = Atomic<Int>(0)
    public let streamsOpen = Atomic<Int>(0)
    public let streamFailures = Atomic<Int>(0)
    public init() {}
}
