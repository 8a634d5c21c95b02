import Crypto
import Foundation

/// The schema files a deployment ships beside the binary: `Migrations/NNNN_name.sql` (applied
/// once each, in order) and `SQL/*.sql` (re-applied on every migrate).
public struct SchemaFiles: Sendable {
    public struct Migration: Sendable, Equatable {
        public let version: Int
        public let name: String
        public let sql: String
        /// SHA-256 of the file, recorded when applied, to catch edits of applied migrations.
        public let checksum: String
    }

    public struct Definition: Sendable, Equatable {
        public let name: String
        public let sql: String
    }

    public let root: URL
    public let migrations: [Migration]
    public let definitions: [Definition]

    public struct NotFound: Error, CustomStringConvertible {
        public let description: String
    }

    /// Loads from `root`, which must hold `Migrations/` and `SQL/`.
    public init(root: URL) throws {
        self.root = root
        let fm = FileManager.default
        let migrationsDirectory = root.appendingPathComponent("Migrations")
        let sqlDirectory = root.appendingPathComponent("SQL")
        var migrations: [Migration] = []
        for file in try fm.contentsOfDirectory(atPath: migrationsDirectory.path).sorted() where file.hasSuffix(".sql") {
            guard let underscore = file.firstIndex(of: "_"), let version = Int(file[..<underscore]) else {
                throw NotFound(description: "migration \(file) must be named NNNN_description.sql")
            }
            let sql = try String(contentsOf: migrationsDirectory.appendingPathComponent(file), encoding: .utf8)
            if let clash = migrations.first(where: { $0.version == version }) {
                throw NotFound(description: "migrations \(clash.name) and \(file) share version \(version)")
            }
            migrations.append(Migration(version: version, name: file, sql: sql, checksum: Self.sha256(sql)))
        }
        var definitions: [Definition] = []
        for file in try fm.contentsOfDirectory(atPath: sqlDirectory.path).sorted() where file.hasSuffix(".sql") {
            let sql = try String(contentsOf: sqlDirectory.appendingPathComponent(file), encoding: .utf8)
            definitions.append(Definition(name: file, sql: sql))
        }
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.definitions = definitions
    }

    /// Finds the directory holding `Migrations/` and `SQL/`: `explicit` (a flag), then
    /// `PGTRACK_HOME`, then the working directory, then the executable's directory and its
    /// parents (so `.build/release/pgtrack` finds the checkout it was built from).
    public static func locate(explicit: String? = nil) throws -> SchemaFiles {
        var candidates: [URL] = []
        if let explicit { candidates.append(URL(fileURLWithPath: explicit)) }
        else {
            if let home = ProcessInfo.processInfo.environment["PGTRACK_HOME"] { candidates.append(URL(fileURLWithPath: home)) }
            candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
            var directory = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
            for _ in 0..<5 {
                candidates.append(directory)
                directory = directory.deletingLastPathComponent()
            }
        }
        for candidate in candidates where isSchemaRoot(candidate) {
            return try SchemaFiles(root: candidate)
        }
        throw NotFound(description: """
            cannot find the Migrations/ and SQL/ directories (looked in \(candidates.map(\.path).joined(separator: ", "))). \
            Run pgtrack from its checkout, pass --schema-dir, or set PGTRACK_HOME.
            """)
    }

    static func isSchemaRoot(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        let fm = FileManager.default
        return fm.fileExists(atPath: url.appendingPathComponent("Migrations").path, isDirectory: &isDirectory) && isDirectory.boolValue
            && fm.fileExists(atPath: url.appendingPathComponent("SQL").path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    static func sha256(_ text: String) -> String {
        SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}
