import Foundation

/// Resource use of a process (Linux /proc), and of the whole machine.
public enum ProcessStats {
    /// Resident set size in bytes, or nil when the process is gone.
    public static func residentBytes(pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
            return kb.map { $0 * 1_024 }
        }
        return nil
    }

    /// User + system CPU seconds the process has used so far.
    public static func cpuSeconds(pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// (busy, total) jiffies of all CPUs, from /proc/stat.
    public static func machineJiffies() -> (busy: Double, total: Double)? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 5 else { return nil }
        let total = values.reduce(0, +)
        let idle = values[3] + values[4]
        return (total - idle, total)
    }

    /// Raises the open-files soft limit to `wanted` (at most the hard limit); returns the limit now in force.
    @discardableResult
    public static func raiseOpenFileLimit(to wanted: UInt64) -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < wanted {
            if limit.rlim_max < wanted {
                // Root may raise the hard limit too.
                var raised = limit
                raised.rlim_max = rlim_t(wanted)
                raised.rlim_cur = rlim_t(wanted)
                if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return wanted }
            }
            limit.rlim_cur = min(rlim_t(wanted), limit.rlim_max)
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return UInt64(limit.rlim_cur)
    }
}

/// Samples a server process and the machine between `start()` and `stop()`.
public struct ResourceWindow: Sendable {
    let pid: Int32?
    let started: ContinuousClock.Instant
    let serverCPU: Double?
    let selfCPU: Double?
    let machine: (busy: Double, total: Double)?

    public init(serverPID: Int32?) {
        pid = serverPID
        started = .now
        serverCPU = serverPID.flatMap { ProcessStats.cpuSeconds(pid: $0) }
        selfCPU = ProcessStats.cpuSeconds(pid: getpid())
        machine = ProcessStats.machineJiffies()
    }

    /// CPU use since `init` as a percentage of one core (server, this process) and of the machine.
    public func finish() -> ResourceUse {
        let seconds = Double((ContinuousClock.now - started).components.seconds)
            + Double((ContinuousClock.now - started).components.attoseconds) / 1e18
        func percent(_ before: Double?, _ after: Double?) -> Double? {
            guard let before, let after, seconds > 0 else { return nil }
            return ((after - before) / seconds * 1_000).rounded() / 10
        }
        var machinePercent: Double?
        if let before = machine, let after = ProcessStats.machineJiffies(), after.total > before.total {
            machinePercent = ((after.busy - before.busy) / (after.total - before.total) * 1_000).rounded() / 10
        }
        return ResourceUse(
            serverCPUPercent: percent(serverCPU, pid.flatMap { ProcessStats.cpuSeconds(pid: $0) }),
            clientCPUPercent: percent(selfCPU, ProcessStats.cpuSeconds(pid: getpid())),
            machineCPUPercent: machinePercent,
            cores: ProcessInfo.processInfo.activeProcessorCount,
            serverRSSBytes: pid.flatMap { ProcessStats.residentBytes(pid: $0) })
    }
}

public struct ResourceUse: Codable, Sendable {
    /// Percent of one core.
    public var serverCPUPercent: Double?
    public var clientCPUPercent: Double?
    /// Percent of all cores.
    public var machineCPUPercent: Double?
    public var cores: Int
    public var serverRSSBytes: Int?

    enum CodingKeys: String, CodingKey {
        case serverCPUPercent = "server_cpu_percent", clientCPUPercent = "client_cpu_percent"
        case machineCPUPercent = "machine_cpu_percent", cores, serverRSSBytes = "server_rss_bytes"
    }
}
