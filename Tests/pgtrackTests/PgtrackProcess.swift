import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TrackingCore
import TrackingTestSupport

/// Runs the built `pgtrack` binary as a subprocess, the way an operator does.
struct PgtrackProcess {
    struct Result: CustomStringConvertible {
        let status: Int32
        let stdout: String
        let stderr: String
        var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }

        /// stdout as a JSON object (the admin and migrate commands print one line of JSON).
        func json() throws -> [String: Any] {
            let line = stdout.split(separator: "\n").last.map(String.init) ?? ""
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw NotJSON(text: stdout)
            }
            return object
        }
    }

    struct NotJSON: Error, CustomStringConvertible {
        let text: String
        var description: String { "stdout is not a JSON object: \(text)" }
    }

    struct SpawnFailed: Error, CustomStringConvertible {
        let code: Int32
        var description: String { "posix_spawn of pgtrack failed: \(code)" }
    }

    struct Timeout: Error, CustomStringConvertible {
        let arguments: [String]
        var description: String { "pgtrack \(arguments.joined(separator: " ")) did not exit within 120 s" }
    }

    /// `<package root>/.build/debug/pgtrack`; `swift test` builds every product before testing.
    static let executable: URL = {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        return root.appendingPathComponent(".build/debug/pgtrack")
    }()

    static func requireBinary(sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(FileManager.default.isExecutableFile(atPath: executable.path),
                     "the pgtrack binary is missing at \(executable.path); run `swift build` (swift test builds it first)",
                     sourceLocation: sourceLocation)
    }

    /// A DATABASE_URL text for `url` (a Unix-socket URL from TestCluster) that parses back to it.
    static func databaseURLText(_ url: DatabaseURL) throws -> String {
        let socket = try #require(url.unixSocketDirectory)
        let encoded = try #require(socket.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_."))))
        let text = "postgres://\(url.username)@\(url.host):\(url.port)/\(url.database)?host=\(encoded)"
        #expect(try DatabaseURL(parsing: text) == url, "DATABASE_URL \(text) must round-trip")
        return text
    }

    /// Runs `pgtrack arguments…` with DATABASE_URL set (when given) and waits for it to exit.
    static func run(_ arguments: [String], database: DatabaseURL?, workingDirectory: URL? = nil) async throws -> Result {
        let overrides = try database.map { ["DATABASE_URL": try databaseURLText($0)] } ?? [:]
        return try await runRaw(arguments, environment: overrides, workingDirectory: workingDirectory)
    }

    /// Runs `pgtrack arguments…` with this process's environment minus pgtrack's variables, plus `overrides`.
    /// The working directory defaults to an empty temporary directory.
    static func runRaw(_ arguments: [String], environment overrides: [String: String],
                       workingDirectory: URL? = nil) async throws -> Result {
        try requireBinary()
        var environment = ProcessInfo.processInfo.environment
        for key in ["DATABASE_URL", "PGTRACK_HOME", "PGTRACK_DATA_DIR"] { environment[key] = nil }
        environment["LOG_LEVEL"] = "warning"
        environment.merge(overrides) { _, new in new }

        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("pgtrack-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("stdout")
        let errURL = scratch.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        defer { try? out.close(); try? err.close() }

        // posix_spawn and waitpid rather than Foundation's Process: its termination handler
        // was seen to miss a child's exit (a CLI test waited its full 120 s in a fresh-clone run).
        let argv = ([executable.path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out.fileDescriptor, 1)
        posix_spawn_file_actions_adddup2(&actions, err.fileDescriptor, 2)
        let directory = (workingDirectory ?? scratch).path
        var pid: pid_t = 0
        // The working directory is changed in the child by a tiny shell-free trick: spawn through
        // /usr/bin/env --chdir, which coreutils on Debian 12 provides.
        let wrapped = [strdup("/usr/bin/env"), strdup("--chdir=\(directory)")] + argv
        defer { free(wrapped[0]); free(wrapped[1]) }
        let spawned = posix_spawn(&pid, "/usr/bin/env", &actions, nil, wrapped, envp)
        guard spawned == 0 else { throw SpawnFailed(code: spawned) }
        var status: Int32?
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            var raw: Int32 = 0
            if waitpid(pid, &raw, WNOHANG) == pid {
                status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
                break
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        guard let status else {
            kill(pid, SIGKILL)
            _ = waitpid(pid, nil, 0)
            throw Timeout(arguments: arguments)
        }
        return Result(status: status,
                      stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }
}
