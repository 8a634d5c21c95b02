import Foundation
import NIOHTTP1
import PostgresNIO
import Testing
import TrackingCore
import TrackingServer
import TrackingStore
import TrackingTestSupport

/// PostgreSQL stopped, restarted or killing connections under a running node. Before the
/// database gate every request waited for the database to come back (a 45 s outage held them
/// 52 s), `/health` with them, and a connection the server terminated answered 500.
@Suite("Database outage: quick 503s with Retry-After, a health check that answers, recovery", .timeLimit(.minutes(3)))
struct DatabaseOutageTests {
    /// Each request's own ceiling: far above what a refused request takes even on a slow
    /// machine, far below the outage a request without the gate waits for (the whole test).
    static let replyCeiling: TimeAmount = .seconds(20)

    static func expectUnavailable(_ reply: LiveNode.Reply, _ what: String) throws {
        #expect(reply.status == 503, "\(what): \(reply.status) \(reply.body.prefix(200))")
        #expect(try reply.error()["code"] as? String == "unavailable", "\(what): \(reply.body.prefix(200))")
        #expect(reply.headers.first(name: "Retry-After").flatMap(Int.init).map { $0 > 0 } == true,
                "\(what): Retry-After \(reply.headers.first(name: "Retry-After") ?? "missing")")
    }

    @Test("with PostgreSQL stopped, /health says 503 within its timeout, 40 requests at once each get 503 unavailable with Retry-After, and once it is back the node serves and streams again")
    func stoppedDatabase() async throws {
        let (cluster, url) = try await TestCluster.privateCluster()
        defer { cluster.discard() }
        try await LiveNode.run(database: url) { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            _ = try await live.health { $0["status"] as? String == "ok" }

            try await offCooperativePool { try cluster.stop() }

            let health = try await live.get("/health", timeout: Self.replyCeiling)
            #expect(health.status == 503)
            #expect(try health.object()["database"] as? Bool == false, "\(health.body)")

            let replies = try await withThrowingTaskGroup(of: (String, LiveNode.Reply).self) { group in
                for i in 0..<40 {
                    group.addTask {
                        switch i % 4 {
                        case 0: return ("POST /api/v1/locations", try await live.request(
                            .POST, "/api/v1/locations", apiKey: setup.apiKey, body: .init(string: Fixes.object(i)), timeout: Self.replyCeiling))
                        case 1: return ("GET /api/v1/devices", try await live.get("/api/v1/devices", bearer: admin.accessToken, timeout: Self.replyCeiling))
                        case 2: return ("GET /api/v1/snapshot", try await live.get("/api/v1/snapshot", bearer: admin.accessToken, timeout: Self.replyCeiling))
                        default: return ("POST /api/v1/auth/login", try await live.request(
                            .POST, "/api/v1/auth/login", body: .init(string: #"{"tenant":"acme","email":"\#(admin.email)","password":"\#(admin.password)"}"#),
                            timeout: Self.replyCeiling))
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for (what, reply) in replies { try Self.expectUnavailable(reply, what) }

            try await offCooperativePool { _ = try cluster.start() }
            // Back: the gate's probe opens it; the first accepted fix is the proof.
            let deadline = ContinuousClock.now + .seconds(60)
            var reply = try await live.request(.POST, "/api/v1/locations", apiKey: setup.apiKey, body: .init(string: Fixes.object(100)))
            while reply.status == 503, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                reply = try await live.request(.POST, "/api/v1/locations", apiKey: setup.apiKey, body: .init(string: Fixes.object(100)))
            }
            #expect(reply.status == 202, "\(reply.status) \(reply.body.prefix(200))")
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            try await live.postPositions(Fixes.object(101), apiKey: setup.apiKey, expecting: 1)
            let update = try await stream.next("the fix posted after the outage")
            #expect(update.event == "location_update" && update.seq != nil, "\(update.event) \(update.data.prefix(200))")
            _ = try await live.health { $0["status"] as? String == "ok" }
        }
    }

    @Test("a request whose connection PostgreSQL terminates (57P01, as in a restart) answers 503 unavailable with Retry-After, not 500, and the next one succeeds")
    func terminatedConnection() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            try await live.postPositions(Fixes.object(0), apiKey: setup.apiKey, expecting: 1)
            try await TestDatabase.withConnection(live.databaseURL) { locker in
                // The ingest waits for this lock inside PostgreSQL, so it is certainly in flight
                // when its backend is terminated.
                _ = try await locker.query("BEGIN", logger: TestCluster.logger)
                _ = try await locker.query("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE", logger: TestCluster.logger)
                async let blocked = live.request(.POST, "/api/v1/locations", apiKey: setup.apiKey,
                                                 body: .init(string: Fixes.object(1)), timeout: Self.replyCeiling)
                let deadline = ContinuousClock.now + .seconds(60)
                var terminated = false
                while !terminated, ContinuousClock.now < deadline {
                    let rows = try await locker.query("""
                        SELECT count(*)::int FROM (
                            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
                               AND application_name = 'pgtrack') t
                        """, logger: TestCluster.logger)
                    for try await count in rows.decode(Int.self) { terminated = count > 0 }
                    if !terminated { try await Task.sleep(for: .milliseconds(20)) }
                }
                #expect(terminated, "the ingest never waited for the lock")
                try Self.expectUnavailable(try await blocked, "the terminated ingest")
                _ = try await locker.query("ROLLBACK", logger: TestCluster.logger)
            }
            try await live.postPositions(Fixes.object(2), apiKey: setup.apiKey, expecting: 1)
        }
    }
}
