import AsyncHTTPClient
import Foundation

/// A `pgtrack serve` child process started by simulate/bench when no --target is given, so the
/// server runs as it does in production and its RSS and CPU can be read from /proc.
public final class ServerProcess: @unchecked Sendable {
    let process: Process
    public let baseURL: String
    public let logFile: URL
    public var pid: Int32 { process.processIdentifier }

    /// Starts `<this executable> serve --port <port> <extra…>` with this environment.
    public init(port: Int, extraArguments: [String], environment: [String: String] = [:]) throws {
        let executable = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                             ?? CommandLine.arguments[0])
        process = Process()
        process.executableURL = executable
        process.arguments = ["serve", "--host", "127.0.0.1", "--port", "\(port)"] + extraArguments
        var env = ProcessInfo.processInfo.environment
        if env["LOG_LEVEL"] == nil { env["LOG_LEVEL"] = "warning" }
        env.merge(environment) { _, new in new }
        process.environment = env
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("pgtrack-load-server-\(port)-\(getpid()).log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let log = try FileHandle(forWritingTo: logFile)
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        baseURL = "http://127.0.0.1:\(port)"
        try process.run()
    }

    /// Waits until `/health/ready` answers 200.
    public func waitUntilReady(http: HTTPClient, timeout: Duration = .seconds(90)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard process.isRunning else { throw LoadError.server("the server exited early:\n\(logTail())") }
            if let (status, _) = try? await LoadHTTP.send(http, "GET", baseURL + "/health/ready", body: nil, headers: [:],
                                                          timeout: .seconds(2)), status == 200 {
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw LoadError.server("the server was not ready within \(timeout):\n\(logTail())")
    }

    public func logTail(lines: Int = 20) -> String {
        let text = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// SIGTERM (graceful shutdown), then SIGKILL after 15 s.
    public func stop() async {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(15)
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: logFile)
    }
}
