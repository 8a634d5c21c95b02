import Foundation

/// Cheap field extraction from the events the server sends, so that a load client spends its
/// CPU on the load and not on decoding 40,000 JSON documents a second. Fixes posted by the
/// simulator carry `attributes: {"sim_d": device index, "sim_n": fix number, "sim_us": wall
/// clock µs when posted}`; the stored event echoes them back.
public enum EventScan {
    static let simDevice = Array(#""sim_d""#.utf8)
    static let simNumber = Array(#""sim_n""#.utf8)
    static let simSent = Array(#""sim_us""#.utf8)
    static let seqKey = Array(#""seq""#.utf8)
    static let typeKey = Array(#""type""#.utf8)

    /// Offset of the first `needle` in `bytes` at or after `from` (memchr for the first byte).
    static func find(_ needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>, from: Int) -> Int? {
        guard let base = bytes.baseAddress, let first = needle.first else { return nil }
        var offset = from
        while offset + needle.count <= bytes.count {
            guard let hit = memchr(base + offset, Int32(first), bytes.count - offset - needle.count + 1) else { return nil }
            let index = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            if memcmp(base + index, needle, needle.count) == 0 { return index }
            offset = index + 1
        }
        return nil
    }

    /// The integer after `key` and a colon (spaces allowed), searching from `from`.
    static func integer(after key: [UInt8], in bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard bytes.count >= key.count else { return nil }
        guard let found = find(key, in: bytes, from: 0) else { return nil }
        return integer(in: bytes, from: found + key.count)
    }

    /// The integer at `from`, after any colons and spaces (an SSE `id:` line's value too).
    static func integer(in bytes: UnsafeBufferPointer<UInt8>, from: Int) -> Int64? {
        var index = from
        while index < bytes.count, bytes[index] == UInt8(ascii: ":") || bytes[index] == UInt8(ascii: " ") { index += 1 }
        var negative = false
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { negative = true; index += 1 }
        var value: Int64 = 0
        var digits = 0
        while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
            value = value &* 10 &+ Int64(bytes[index] - 48)
            index += 1
            digits += 1
        }
        return digits == 0 ? nil : (negative ? -value : value)
    }

    /// The string after `key` and a colon: `"type": "reset"` → reset.
    static func string(after key: [UInt8], in bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard bytes.count >= key.count else { return nil }
        guard let found = find(key, in: bytes, from: 0) else { return nil }
        var index = found + key.count
        while index < bytes.count, bytes[index] == UInt8(ascii: ":") || bytes[index] == UInt8(ascii: " ") { index += 1 }
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        index += 1
        let start = index
        while index < bytes.count, bytes[index] != UInt8(ascii: "\"") { index += 1 }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
    }

    /// A simulator fix inside an event, if it is one.
    struct SimFix {
        var device: Int
        var number: Int64
        var sentMicros: Int64
    }

    static func simFix(in bytes: UnsafeBufferPointer<UInt8>) -> SimFix? {
        guard let device = integer(after: simDevice, in: bytes),
              let number = integer(after: simNumber, in: bytes),
              let sent = integer(after: simSent, in: bytes) else { return nil }
        return SimFix(device: Int(device), number: number, sentMicros: sent)
    }
}

/// Wall-clock microseconds (the simulator's drivers and viewers share the clock).
public func wallMicros() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1_000
}

/// ISO-8601 UTC with milliseconds for a wall-clock time in microseconds.
func isoTimestamp(micros: Int64) -> String {
    var seconds = time_t(micros / 1_000_000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                  Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(micros % 1_000_000 / 1_000))
}
