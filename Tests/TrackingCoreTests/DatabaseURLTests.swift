import Testing
import TrackingCore

@Suite("DatabaseURL parsing")
struct DatabaseURLTests {
    @Test("every part of a full URL is read")
    func full() throws {
        let url = try DatabaseURL(parsing: "postgres://alice:s3cret@db.example.com:6543/tracking?sslmode=require")
        #expect(url == DatabaseURL(host: "db.example.com", port: 6543, username: "alice", password: "s3cret",
                                   database: "tracking", sslMode: .require, unixSocketDirectory: nil))
    }

    @Test("defaults: user postgres, port 5432, no password, sslmode disable; postgresql:// is accepted")
    func defaults() throws {
        let url = try DatabaseURL(parsing: "postgresql://db.internal/app")
        #expect(url.host == "db.internal")
        #expect(url.port == 5432)
        #expect(url.username == "postgres")
        #expect(url.password == nil)
        #expect(url.database == "app")
        #expect(url.sslMode == .disable)
        #expect(url.unixSocketDirectory == nil)
        #expect(try DatabaseURL(parsing: "postgres://bob@h/d").password == nil)
        #expect(try DatabaseURL(parsing: "postgres://bob@h/d").username == "bob")
    }

    @Test("user, password and database are percent-decoded; '@' may appear in the password")
    func percentDecoding() throws {
        let url = try DatabaseURL(parsing: "postgres://us%65r%2Bx:p%40ss%3Aw%2Fd@host:5432/my%20db")
        #expect(url.username == "user+x")
        #expect(url.password == "p@ss:w/d")
        #expect(url.database == "my db")
        #expect(try DatabaseURL(parsing: "postgres://u:p@ss@host/db").password == "p@ss")
        #expect(try DatabaseURL(parsing: "postgres://u:%C3%A9t%C3%A9@h/db").password == "été")
    }

    @Test("a '%' that does not start an escape is never silently dropped with the characters after it")
    func strayPercent() {
        // Either an error or the literal text; "100%" would connect with the wrong password.
        if let url = try? DatabaseURL(parsing: "postgres://u:100%zz@h/db") {
            #expect(url.password == "100%zz")
        }
        if let url = try? DatabaseURL(parsing: "postgres://u:50%@h/db") {
            #expect(url.password == "50%")
        }
        if let url = try? DatabaseURL(parsing: "postgres://u:a%2@h/db") {
            #expect(url.password == "a%2")
        }
    }

    @Test("sslmode values map to disable, prefer or require", arguments: [
        ("disable", DatabaseURL.SSLMode.disable), ("allow", .prefer), ("prefer", .prefer), ("require", .require),
        ("verify-ca", .require), ("verify-full", .require),
    ])
    func sslModes(text: String, mode: DatabaseURL.SSLMode) throws {
        #expect(try DatabaseURL(parsing: "postgres://u@h/db?application_name=x&sslmode=\(text)").sslMode == mode)
    }

    @Test("a host=/path query item selects a Unix socket directory")
    func socketQuery() throws {
        let url = try DatabaseURL(parsing: "postgres://postgres@localhost:5433/db?host=%2Fvar%2Frun%2Fpostgresql")
        #expect(url.unixSocketDirectory == "/var/run/postgresql")
        #expect(url.port == 5433)
        #expect(try DatabaseURL(parsing: "postgres://postgres@localhost/db?host=/tmp/pg").unixSocketDirectory == "/tmp/pg")
        #expect(try DatabaseURL(parsing: "postgres://postgres@localhost/db?host=db.example").unixSocketDirectory == nil)
    }

    @Test("a percent-encoded path as host selects a Unix socket directory")
    func socketHost() throws {
        let url = try DatabaseURL(parsing: "postgres://postgres@%2Ftmp%2Fpgtrack-x%2Frun:5432/t_1")
        #expect(url.unixSocketDirectory == "/tmp/pgtrack-x/run")
        #expect(url.port == 5432)
        #expect(url.database == "t_1")
    }

    @Test("an IPv6 literal host loses its brackets")
    func ipv6() throws {
        let url = try DatabaseURL(parsing: "postgres://u@[::1]:5433/db")
        #expect(url.host == "::1")
        #expect(url.port == 5433)
        #expect(try DatabaseURL(parsing: "postgres://u@[::1]/db").host == "::1")
    }

    @Test("malformed URLs are rejected with a message saying what is wrong", arguments: [
        ("localhost:5432/db", "postgres://"),
        ("mysql://u@h/db", "mysql"),
        ("postgres://u@h:99999/db", "port"),
        ("postgres://u@h:0/db", "port"),
        ("postgres://u@h:abc/db", "port"),
        ("postgres://u@h:5432", "database"),
        ("postgres://u@h:5432/", "database"),
        ("postgres://u@h/db?sslmode=bogus", "sslmode"),
    ])
    func errors(text: String, mentions: String) {
        do {
            let url = try DatabaseURL(parsing: text)
            Issue.record("\(text) parsed as \(url)")
        } catch {
            #expect(error.description.contains(mentions), "\(error.description)")
        }
    }

    @Test("redacted hides the password; with(database:) changes only the database")
    func redactedAndWith() throws {
        let url = try DatabaseURL(parsing: "postgres://alice:topsecret@h:6000/a")
        #expect(!url.redacted.contains("topsecret"))
        #expect(url.redacted == "postgres://alice:***@h:6000/a")
        let other = url.with(database: "b")
        #expect(other.database == "b")
        #expect(other.with(database: "a") == url)
    }
}
