import Foundation

/// The one reader of the date-times clients send (REST positions and batches, producer events,
/// every device protocol, Traccar events, query parameters) and the one writer of the times the
/// service emits, so that no path reads or writes a time differently from another.
///
/// The fields are read as integers and the instant is computed from them. Foundation's
/// ISO-8601 parser and formatter go through binary floating point and truncate: a device time
/// that was parsed, formatted and parsed again came back a millisecond early (`12.318` stored as
/// `12.317`, `.999` as `.998`). Fractional seconds are rounded, not truncated, to the microsecond
/// PostgreSQL stores; `to_timestamp(float8)` (the inserts) rounds the Date back to that microsecond.
public enum Timestamp {
    /// What a text without a zone means.
    public enum Zone: Sendable {
        /// A zone is required: the REST API, where a missing zone would silently be read as UTC.
        case required
        /// No zone means UTC, and a space (or `+`, form encoding's space) may separate the date
        /// and the time: device protocols, whose firmware writes `2026-11-23 10:15:30`.
        case utcIfAbsent
    }

    /// `yyyy-MM-ddTHH:mm:ss`, optionally `.` and 1–9 digits of fraction, then `Z`, `±hh:mm` or
    /// `±hhmm` (Traccar 4.x writes `+0000`: Jackson before 2.11 left the colon out).
    /// Impossible fields (25:00, February 30) are refused rather than rolled over into another
    /// instant: they are a broken device clock, not a time to store.
    public static func parse(_ text: String, zone rule: Zone = .required) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 19, bytes.count <= 40 else { return nil }
        var at = 0
        func digits(_ count: Int) -> Int? {
            guard at + count <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[at..<at + count] {
                guard byte >= 0x30 && byte <= 0x39 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            at += count
            return value
        }
        func skip(_ allowed: Set<UInt8>) -> Bool {
            guard at < bytes.count, allowed.contains(bytes[at]) else { return false }
            at += 1
            return true
        }
        let separators: Set<UInt8> = rule == .required ? [0x54, 0x74] : [0x54, 0x74, 0x20, 0x2B]  // T t (space +)
        guard let year = digits(4), skip([0x2D]), let month = digits(2), skip([0x2D]), let day = digits(2), skip(separators),
              let hour = digits(2), skip([0x3A]), let minute = digits(2), skip([0x3A]), let second = digits(2),
              (1...9999).contains(year), (1...12).contains(month), (1...daysIn(month, of: year)).contains(day),
              hour < 24, minute < 60, second < 60
        else { return nil }

        // Microseconds, rounded half up on the seventh digit (and carried into the second).
        var micros = 0
        if skip([0x2E]) {
            let start = at
            while at < bytes.count, bytes[at] >= 0x30 && bytes[at] <= 0x39 { at += 1 }
            let fraction = bytes[start..<at]
            guard (1...9).contains(fraction.count) else { return nil }
            for (offset, byte) in fraction.enumerated() {
                let digit = Int(byte - 0x30)
                if offset < 6 {
                    micros = micros * 10 + digit
                } else if offset == 6 {
                    if digit >= 5 { micros += 1 }
                    break
                }
            }
            for _ in fraction.count..<max(fraction.count, 6) { micros *= 10 }
        }

        var offset = 0
        if at == bytes.count {
            guard rule == .utcIfAbsent else { return nil }
        } else if skip([0x5A, 0x7A]) {  // Z z
            guard at == bytes.count else { return nil }
        } else {
            guard at < bytes.count, bytes[at] == 0x2B || bytes[at] == 0x2D else { return nil }
            let sign = bytes[at] == 0x2D ? -1 : 1
            at += 1
            guard let hours = digits(2) else { return nil }
            _ = skip([0x3A])  // the colon is optional: +00:00 and +0000 alike
            guard let minutes = digits(2), at == bytes.count, hours < 24, minutes < 60 else { return nil }
            offset = sign * (hours * 3_600 + minutes * 60)
        }
        let seconds = Int64(daysSince1970(year: year, month: month, day: day)) * 86_400
            + Int64(hour * 3_600 + minute * 60 + second - offset)
        return Date(timeIntervalSince1970: Double(seconds) + Double(micros) / 1_000_000)
    }

    /// ISO-8601 UTC with milliseconds (`2026-11-23T10:15:30.318Z`), like every time the service
    /// emits; rounded to the millisecond, so a time read back from PostgreSQL as `.318` (a
    /// Double a hair below it) is written as `.318`, not truncated to `.317`.
    public static func format(_ date: Date) -> String {
        let millis = (date.timeIntervalSince1970 * 1_000).rounded()
        let whole = (millis / 1_000).rounded(.down)
        let fraction = Int(millis - whole * 1_000)
        // A whole second is exact in a Date, so Foundation writes its fields unchanged.
        let text = Date(timeIntervalSince1970: whole).formatted(Date.ISO8601FormatStyle())
        let digits = String(fraction)
        return String(text.dropLast()) + "." + String(repeating: "0", count: 3 - digits.count) + digits + "Z"
    }

    static func isLeap(_ year: Int) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

    static func daysIn(_ month: Int, of year: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
    /// days_from_civil).
    static func daysSince1970(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
