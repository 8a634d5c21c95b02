import Foundation
import Testing
import TrackingCore
import TrackingTestSupport

/// The real Migrations/ and SQL/ files split into the statements a reader sees in them.
///
/// The schema files follow one layout rule: every top-level statement starts at column 0 with
/// CREATE, DROP, ALTER, INSERT, GRANT or DO, and nothing else at column 0 does (function bodies
/// put BEGIN/END/DECLARE and LANGUAGE lines there, never those words). That gives an oracle
/// independent of the splitter.
@Suite("SQLScriptSplitter on the schema files")
struct SchemaScriptSplitTests {
    static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    static let files: [String] = {
        let fm = FileManager.default
        var names: [String] = []
        for directory in ["Migrations", "SQL"] {
            let path = packageRoot.appendingPathComponent(directory).path
            let entries = (try? fm.contentsOfDirectory(atPath: path)) ?? []
            names += entries.filter { $0.hasSuffix(".sql") }.sorted().map { "\(directory)/\($0)" }
        }
        return names
    }()

    static func read(_ file: String) throws -> String {
        try String(contentsOf: packageRoot.appendingPathComponent(file), encoding: .utf8)
    }

    /// The first word of a statement after its leading comment lines.
    static func leadingKeyword(_ statement: String) -> String {
        let code = statement.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .first { !$0.isEmpty && !$0.hasPrefix("--") } ?? ""
        return String(code.prefix { $0.isLetter }).uppercased()
    }

    static let statementWords: Set<String> = ["CREATE", "DROP", "ALTER", "INSERT", "GRANT", "DO"]

    static func topLevelKeywords(_ script: String) -> [String] {
        script.split(separator: "\n", omittingEmptySubsequences: false).compactMap { line in
            let word = String(line.prefix { $0.isLetter })
            return Self.statementWords.contains(word) && line.dropFirst(word.count).first == " " ? word : nil
        }
    }

    @Test("the schema directories hold the expected files")
    func filesExist() {
        #expect(Self.files.contains("Migrations/0001_core.sql"))
        #expect(Self.files.contains("SQL/030_positions_trigger.sql"))
    }

    @Test("every file splits into one statement per top-level statement line, in order", arguments: files)
    func matchesLayout(file: String) throws {
        let script = try Self.read(file)
        let statements = SQLScriptSplitter.split(script)
        let expected = Self.topLevelKeywords(script)
        #expect(!expected.isEmpty)
        #expect(statements.map(Self.leadingKeyword) == expected)
    }

    @Test("no statement of a schema file is cut inside a dollar-quoted body", arguments: files)
    func balancedBodies(file: String) throws {
        for statement in SQLScriptSplitter.split(try Self.read(file)) {
            let dollars = statement.components(separatedBy: "$$").count - 1
            #expect(dollars % 2 == 0, "unbalanced $$ in: \(statement.prefix(120))")
            #expect(!statement.hasSuffix(";"))
        }
    }

    @Test("SQL/030_positions_trigger.sql: a function with its whole body, then DROP and CREATE TRIGGER")
    func positionsTrigger() throws {
        let statements = SQLScriptSplitter.split(try Self.read("SQL/030_positions_trigger.sql"))
        for statement in statements {
            let keyword = Self.leadingKeyword(statement)
            #expect(keyword == "CREATE" || keyword == "DROP", "unexpected statement: \(statement.prefix(120))")
        }
        let function = try require(statements.first { $0.contains("FUNCTION pgtrack_positions_after_insert") })
        #expect(function.contains("PERFORM pgtrack_notify_logged"))
        #expect(function.hasSuffix("END\n$$"))
        check(statements.contains { $0.hasPrefix("DROP TRIGGER IF EXISTS positions_after_insert") })
        #expect(statements.last?.hasPrefix("CREATE TRIGGER positions_after_insert") == true)
    }

    @Test("Migrations/0001_core.sql keeps multi-line table definitions whole")
    func coreMigration() throws {
        let statements = SQLScriptSplitter.split(try Self.read("Migrations/0001_core.sql"))
        let positions = try require(statements.first { $0.contains("CREATE TABLE positions") })
        #expect(positions.hasSuffix("PARTITION BY RANGE (fix_time)"))
        #expect(statements.first.map(Self.leadingKeyword) == "CREATE")
        #expect(statements.first?.contains("CREATE EXTENSION IF NOT EXISTS postgis") == true)
    }
}
