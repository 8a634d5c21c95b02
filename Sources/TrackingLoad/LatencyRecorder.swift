import Histogram
import Synchronization

/// A latency histogram (microseconds, 3 significant digits) shared by many tasks.
public final class LatencyRecorder: Sendable {
    private let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three))

    public init() {}

    public func record(microseconds: Int64) {
        let value = UInt64(clamping: max(0, microseconds))
        histogram.withLock { _ = $0.record(min(value, 600_000_000)) }
    }

    public func reset() { histogram.withLock { $0.reset() } }

    public var summary: LatencySummary { histogram.withLock { LatencySummary($0) } }

    var snapshot: Histogram<UInt64> { histogram.withLock { $0 } }

    /// One summary over several recorders.
    public static func merged(_ recorders: [LatencyRecorder]) -> LatencySummary {
        var total = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        for recorder in recorders { total.add(recorder.snapshot) }
        return LatencySummary(total)
    }
}

/// Percentiles in milliseconds.
public struct LatencySummary: Codable, Sendable, CustomStringConvertible {
    public var count: UInt64
    public var p50: Double
    public var p95: Double
    public var p99: Double
    public var max: Double
    public var mean: Double

    init(_ histogram: Histogram<UInt64>) {
        count = histogram.totalCount
        func ms(_ value: UInt64) -> Double { (Double(value) / 1_000 * 1_000).rounded() / 1_000 }
        p50 = count == 0 ? 0 : ms(histogram.valueAtPercentile(50))
        p95 = count == 0 ? 0 : ms(histogram.valueAtPercentile(95))
        p99 = count == 0 ? 0 : ms(histogram.valueAtPercentile(99))
        max = count == 0 ? 0 : ms(histogram.max)
        mean = count == 0 ? 0 : (histogram.mean / 1_000 * 1_000).rounded() / 1_000
    }

    public var description: String {
        String(format: "p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms (n=%llu)", p50, p95, p99, max, count)
    }
}
