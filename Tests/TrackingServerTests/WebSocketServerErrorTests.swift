import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A socket session that fails on an unexpected error (here a database error while joining a
/// room) must end cleanly: the server process survives, the socket's subscriptions are
/// released, and other sockets keep working.
///
/// The scenario runs in a child process (the test binary itself, filtered to the probe below):
/// when the session leaves its reader iterating the socket's inbound stream while WSCore reads
/// it for the closing handshake, NIO stops the whole process with a precondition failure, and
/// that must not take the rest of the test run with it.
@Suite("WebSocket: a server-side error ends one socket, not the server", .timeLimit(.minutes(3)))
struct WebSocketServerErrorTests {
    static let probeVariable = "PGTRACK_WS_SERVER_ERROR_PROBE"
    static let probeSuite = "WebSocketServerErrorProbeTests"
    static var selfExecutable: URL? {
        FileManager.default.fileExists(atPath: "/proc/self/exe")
            ? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath() : nil
    }

    @Test("a database error while a socket joins a room: the server process survives (probe in a child process)",
          .enabled(if: selfExecutable != nil && ProcessInfo.processInfo.environment[probeVariable] == nil))
    func databaseErrorDuringJoin() async throws {
        let executable = try #require(Self.selfExecutable)
        let log = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("pgtrack-ws-probe-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let environment = ProcessInfo.processInfo.environment.merging([Self.probeVariable: "1"]) { $1 }
        let child = try Self.spawn(executable.path, ["--testing-library", "swift-testing", "--filter", Self.probeSuite],
                                   environment: environment, output: log.path)
        var status: Int32 = 0
        var finished = false
        let deadline = ContinuousClock.now + .seconds(150)
        while ContinuousClock.now < deadline {
            if waitpid(child, &status, WNOHANG) == child { finished = true; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        if !finished {
            kill(child, SIGKILL)
            _ = waitpid(child, &status, 0)
        }
        try await offCooperativePool { Self.removeCluster(of: child) }
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let tail = String(text.suffix(3_000))
        let signal = status & 0x7f
        let exitCode = (status >> 8) & 0xff

        #expect(finished, "the probe did not finish within 150 s: \(tail)")
        #expect(!text.contains("Fatal error"), "the server process crashed: \(tail)")
        #expect(signal == 0 && exitCode == 0, "the probe process ended with signal \(signal), exit code \(exitCode): \(tail)")
        #expect(text.contains("✔ Test \"a join that fails on a database error"), "the probe ran and passed: \(tail)")
    }

    /// Starts `path` with its output in the file `output` (posix_spawn: Foundation's Process
    /// does not notice a child's exit in this process).
    static func spawn(_ path: String, _ arguments: [String], environment: [String: String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard result == 0 else { throw WSClientError(description: "posix_spawn \(path) failed: \(result)") }
        return pid
    }

    /// A child that crashed left its PostgreSQL cluster running (its atexit cleanup never ran):
    /// stop it and remove its directory.
    static func removeCluster(of pid: Int32) {
        let temporary = URL(fileURLWithPath: NSTemporaryDirectory())
        let names = (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? []
        for name in names where name.hasPrefix("pgtrack-test-\(pid)-") {
            let root = temporary.appendingPathComponent(name)
            let pidFile = root.appendingPathComponent("data/postmaster.pid")
            if let first = (try? String(contentsOf: pidFile, encoding: .utf8))?.split(separator: "\n").first,
               let postmaster = Int32(first.trimmingCharacters(in: .whitespaces)), postmaster > 1 {
                kill(postmaster, SIGINT)  // fast shutdown
                for _ in 0..<100 where kill(postmaster, 0) == 0 { usleep(100_000) }
            }
            try? FileManager.default.removeItem(at: root)
        }
    }
}

/// Runs only inside the child process started above.
@Suite("WebSocket: server error probe (child process only)", .timeLimit(.minutes(2)))
struct WebSocketServerErrorProbeTests {
    @Test("a join that fails on a database error ends cleanly; other sockets and later joins work",
          .enabled(if: ProcessInfo.processInfo.environment[WebSocketServerErrorTests.probeVariable] != nil))
    func probe() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let device = setup.device.id.uuidString.lowercased()
                let bystander = try await ws.open("/ws", apiKey: setup.apiKey)
                try await bystander.joinRoom("tenant:acme")
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                try await socket.joinRoom("tenant:acme")

                // Resolving a device room reads the devices table: make that read fail.
                _ = try await TestDatabase.withConnection(live.databaseURL) { connection in
                    try await connection.query("ALTER TABLE devices RENAME TO devices_hidden", logger: TestCluster.logger)
                }
                try await socket.join("device:\(device)")
                // Whatever the session does (an error message, a close), it does it in time.
                _ = try await socket.inbox.wait(timeout: .seconds(20), waitingFor: "an answer to the failed join", endIsFine: true) { state in
                    state.taken < state.messages.count || state.end != nil ? true : nil
                }
                _ = try await TestDatabase.withConnection(live.databaseURL) { connection in
                    try await connection.query("ALTER TABLE devices_hidden RENAME TO devices", logger: TestCluster.logger)
                }
                if socket.inbox.end == nil {
                    let answer = try await socket.next("the answer to the failed join")
                    #expect(answer.type == "error", "\(answer)")
                }

                // The other socket is unaffected, and a new one can join the room that failed.
                try await bystander.expectQuiet("the bystander still answers")
                let fresh = try await ws.open("/ws", apiKey: setup.apiKey)
                #expect(try await fresh.joinRoom("device:\(device)").snapshotDevices.isEmpty)
                try await live.postPositions(Fixes.object(1), apiKey: setup.apiKey, expecting: 1)
                #expect(try await bystander.next("the bystander's update").fixIndex == 1)
                #expect(try await fresh.next("the fresh socket's update").fixIndex == 1)

                // Once the failed socket is gone, nothing of it stays subscribed.
                await socket.close()
                await fresh.close()
                await bystander.close()
                _ = try await live.health(until: { ($0["subscribers"] as? Int) == 0 })
            }
        }
    }
}
