import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import TrackingCore

/// A PostgreSQL cluster that pgtrack owns: `./.pgtrack/` for `pgtrack serve` without
/// `DATABASE_URL`, a temporary directory for tests. initdb once, then reuse.
///
/// PostgreSQL refuses to run as root, so as root every server command runs as the `postgres`
/// user (`runuser`), and the directory is handed to that user.
public struct LocalCluster: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public enum Status: Sendable, Equatable {
        case running(pid: Int?)
        case stopped
        case notInitialized
    }

    /// Where the cluster lives: `data/` (PGDATA), `run/` (Unix socket), `postgres.log`.
    public let root: URL
    public let port: Int
    /// Also accept TCP connections on 127.0.0.1 (for psql and tools); tests use the socket only.
    public let listenOnLoopback: Bool
    /// Tests trade durability for speed (fsync off); a service keeps the defaults.
    public let durable: Bool
    /// The test suite runs many nodes at once, each with its pool and listener: it peaked at 978
    /// connections, so its cluster allows more than a service's.
    public let maxConnections: Int
    public let databaseName: String
    let binDirectory: URL
    let logger: Logger

    public init(root: URL, port: Int = 54329, listenOnLoopback: Bool = true, durable: Bool = true,
                maxConnections: Int = 1_000,
                databaseName: String = "pgtrack", logger: Logger = Logger(label: "pgtrack.cluster")) throws(Failure) {
        self.root = root.standardizedFileURL
        self.port = port
        self.listenOnLoopback = listenOnLoopback
        self.durable = durable
        self.maxConnections = maxConnections
        self.databaseName = databaseName
        self.binDirectory = try Self.findBinDirectory()
        self.logger = logger
    }

    public var dataDirectory: URL { root.appendingPathComponent("data") }
    public var socketDirectory: URL { root.appendingPathComponent("run") }
    public var logFile: URL { root.appendingPathComponent("postgres.log") }

    /// How pgtrack connects: the Unix socket, as the `postgres` superuser (trust auth).
    public var databaseURL: DatabaseURL {
        DatabaseURL(host: "127.0.0.1", port: port, username: "postgres", password: nil, database: databaseName,
                    sslMode: .disable, unixSocketDirectory: socketDirectory.path)
    }

    /// What a person types to reach the same database with psql.
    public var psqlHint: String {
        listenOnLoopback ? "psql -h 127.0.0.1 -p \(port) -U postgres \(databaseName)"
            : "psql -h \(socketDirectory.path) -p \(port) -U postgres \(databaseName)"
    }

    public func status() throws(Failure) -> Status {
        guard FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("PG_VERSION").path) else {
            return .notInitialized
        }
        let result = try run("pg_ctl", ["status", "-D", dataDirectory.path])
        if result.status == 0 {
            let pid = result.output.split(separator: "PID: ").dropFirst().first
                .flatMap { Int($0.prefix { $0.isNumber }) }
            return .running(pid: pid)
        }
        return .stopped
    }

    /// Creates the cluster if needed and starts it. Returns false when it was already running.
    @discardableResult
    public func start() throws(Failure) -> Bool {
        try prepareDirectory()
        if case .notInitialized = try status() {
            try initialize()
        }
        if case .running = try status() { return false }
        let result = try run("pg_ctl", ["start", "-D", dataDirectory.path, "-l", logFile.path, "-w", "-t", "60"])
        guard result.status == 0 else {
            throw Failure(description: "PostgreSQL did not start (pg_ctl exit \(result.status)): \(result.output)\n\(logTail())")
        }
        logger.info("local PostgreSQL started", metadata: ["data": "\(dataDirectory.path)", "port": "\(port)"])
        return true
    }

    public func stop() throws(Failure) {
        guard case .running = try status() else { return }
        let result = try run("pg_ctl", ["stop", "-D", dataDirectory.path, "-m", "fast", "-w", "-t", "60"])
        guard result.status == 0 else {
            throw Failure(description: "PostgreSQL did not stop (pg_ctl exit \(result.status)): \(result.output)")
        }
        logger.info("local PostgreSQL stopped", metadata: ["data": "\(dataDirectory.path)"])
    }

    /// Ends a throwaway cluster (the tests'): an immediate shutdown, which skips the shutdown
    /// checkpoint, then `rm -rf` of its directory. Foundation's removeItem took minutes over the
    /// hundreds of thousands of files a full test run's databases leave, at exit, after the
    /// last test had passed (seen as a test process that "hung at exit").
    public func discard() {
        if case .running = (try? status()) ?? .stopped {
            _ = try? run("pg_ctl", ["stop", "-D", dataDirectory.path, "-m", "immediate", "-w", "-t", "60"])
        }
        _ = Self.runProcess("/bin/rm", ["-rf", root.path])
    }

    private func initialize() throws(Failure) {
        let result = try run("initdb", ["-D", dataDirectory.path, "-U", "postgres", "--auth=trust",
                                        "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"])
        guard result.status == 0 else {
            throw Failure(description: "initdb failed (exit \(result.status)): \(result.output)")
        }
        var settings = [
            "port = \(port)",
            "unix_socket_directories = '\(socketDirectory.path)'",
            "listen_addresses = '\(listenOnLoopback ? "127.0.0.1" : "")'",
            "max_connections = \(maxConnections)",
            "timezone = 'UTC'",
        ]
        if !durable {
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        }
        let config = dataDirectory.appendingPathComponent("postgresql.auto.conf")
        let text = settings.joined(separator: "\n") + "\n"
        do {
            let handle = try FileHandle(forWritingTo: config)
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(text.utf8))
            try handle.close()
        } catch {
            throw Failure(description: "cannot write \(config.path): \(error)")
        }
        logger.info("initialized local PostgreSQL cluster", metadata: ["data": "\(dataDirectory.path)"])
    }

    private func prepareDirectory() throws(Failure) {
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: socketDirectory, withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot create \(socketDirectory.path): \(error)")
        }
        guard Self.isRoot else { return }
        // The postgres user must own the cluster and be able to reach it.
        let chown = Self.runProcess("/bin/chown", ["-R", "postgres:postgres", root.path])
        guard chown.status == 0 else { throw Failure(description: "cannot hand \(root.path) to the postgres user: \(chown.output)") }
        let reach = Self.runProcess("/usr/sbin/runuser", ["-u", "postgres", "--", "test", "-w", root.path])
        guard reach.status == 0 else {
            throw Failure(description: """
                the postgres user cannot reach \(root.path) (a parent directory is private, e.g. /root). \
                Run pgtrack from a directory other users can traverse, or set PGTRACK_DATA_DIR to one (e.g. /var/lib/pgtrack).
                """)
        }
    }

    private func logTail() -> String {
        guard let text = try? String(contentsOf: logFile, encoding: .utf8) else { return "" }
        return "last lines of \(logFile.path):\n" + text.split(separator: "\n").suffix(15).joined(separator: "\n")
    }

    private func run(_ tool: String, _ arguments: [String]) throws(Failure) -> (status: Int32, output: String) {
        let executable = binDirectory.appendingPathComponent(tool).path
        if Self.isRoot {
            return Self.runProcess("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
        }
        return Self.runProcess(executable, arguments)
    }

    static var isRoot: Bool { getuid() == 0 }

    /// Runs a program to completion with posix_spawn + waitpid. Foundation's Process is avoided:
    /// on Linux it can miss the exit of a child whose own child (the postmaster) lives on.
    static func runProcess(_ executable: String, _ arguments: [String]) -> (status: Int32, output: String) {
        let outputPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("pgtrack-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { return (127, "cannot run \(executable): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // WIFEXITED / WEXITSTATUS are macros Swift cannot import.
        let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exitCode, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `PG_BIN` if set, else the newest /usr/lib/postgresql/<version>/bin that has initdb.
    static func findBinDirectory() throws(Failure) -> URL {
        let fm = FileManager.default
        if let explicit = ProcessInfo.processInfo.environment["PG_BIN"] {
            return URL(fileURLWithPath: explicit)
        }
        let base = "/usr/lib/postgresql"
        let versions = ((try? fm.contentsOfDirectory(atPath: base)) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for version in versions where fm.isExecutableFile(atPath: "\(base)/\(version)/bin/initdb") {
            return URL(fileURLWithPath: "\(base)/\(version)/bin")
        }
        throw Failure(description: "PostgreSQL server binaries not found under \(base); run scripts/bootstrap (or set PG_BIN)")
    }
}
