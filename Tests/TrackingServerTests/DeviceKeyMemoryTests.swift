import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A serving node remembers which device a key belongs to (DeviceKeyCache), and forgets it
/// whenever the database says a key or device changed, however it changed.
@Suite("device keys remembered by a node", .timeLimit(.minutes(3)))
struct DeviceKeyMemoryTests {
    /// Posts with `key` until the node remembers it (the listener must be LISTENing first).
    static func postUntilRemembered(_ live: LiveNode, key: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        var fix = 0
        while live.node.deviceKeys.count == 0 {
            try #require(ContinuousClock.now < deadline, "the node never remembered the key", sourceLocation: sourceLocation)
            #expect(try await RoleCheckKeyRotationTests.post(live, key: key, fix: fix) == 202, sourceLocation: sourceLocation)
            fix += 1
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Posts with `key` until it is refused; fails if it is still accepted after 30 s (the
    /// node's memory lasts 60 s, so only the ring can end it sooner).
    static func postUntilRefused(_ live: LiveNode, key: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        var fix = 100
        while try await RoleCheckKeyRotationTests.post(live, key: key, fix: fix) == 202 {
            try #require(ContinuousClock.now < deadline, "the key still works 30 s after the change", sourceLocation: sourceLocation)
            fix += 1
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test("a key revoked with plain SQL stops working on a node that remembers it, and is forgotten")
    func revokedBySQL() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            try await Self.postUntilRemembered(live, key: acme.apiKey)
            _ = try await TestDatabase.withConnection(live.databaseURL) { sql in
                try await sql.query("UPDATE device_api_keys SET revoked_at = now() WHERE device_id = \(acme.device.id)",
                                    logger: TestCluster.logger)
            }
            try await Self.postUntilRefused(live, key: acme.apiKey)
            let refused = try await live.post("/api/v1/locations", apiKey: acme.apiKey, json: Fixes.object(1_000))
            ValidationTests.expectError(refused, status: 401, code: "unauthorized", "the revoked key")
            #expect(live.node.deviceKeys.count == 0)
        }
    }

    @Test("a device deleted with plain SQL stops posting; another tenant's remembered key keeps working")
    func deletedBySQL() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let globex = try await TestTenant.create(live.repository, id: "globex")
            try await Self.postUntilRemembered(live, key: globex.apiKey)
            #expect(try await RoleCheckKeyRotationTests.post(live, key: acme.apiKey, fix: 1) == 202)
            #expect(live.node.deviceKeys.count == 2)
            _ = try await TestDatabase.withConnection(live.databaseURL) { sql in
                try await sql.query("SELECT pgtrack_purge_device('acme', \(acme.device.id))", logger: TestCluster.logger)
                try await sql.query("DELETE FROM devices WHERE id = \(acme.device.id)", logger: TestCluster.logger)
            }
            try await Self.postUntilRefused(live, key: acme.apiKey)
            #expect(live.node.deviceKeys.count == 1, "only acme's key is forgotten")
            #expect(try await RoleCheckKeyRotationTests.post(live, key: globex.apiKey, fix: 2) == 202)
        }
    }

    @Test("when the listener's connection is lost the node forgets every key, and remembers again once it is back")
    func listenerLost() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            try await Self.postUntilRemembered(live, key: acme.apiKey)
            let kills = try await TestDatabase.withConnection(live.databaseURL, applicationName: "pgtrack-test-admin") { admin in
                try await StreamFailureTests.terminateListener(on: admin)
            }
            #expect(kills == 1)
            let report = try await live.health(until: { ($0["listener_reconnects"] as? Int ?? 0) >= 1 && $0["listener_connected"] as? Bool == true })
            #expect(live.node.deviceKeys.count == 0, "rings may have been missed while it was down: \(report)")
            try await Self.postUntilRemembered(live, key: acme.apiKey)
        }
    }
}
