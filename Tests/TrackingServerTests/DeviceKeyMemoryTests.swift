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

    /// Waits (bounded) until the node remembers `count` keys: a post can be refused by the
    /// database (the device is gone) before the listener has delivered the ring that forgets it.
    static func expectRemembered(_ count: Int, _ live: LiveNode, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while live.node.deviceKeys.count != count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(live.node.deviceKeys.count == count, "\(what)", sourceLocation: sourceLocation)
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
            try await live.sql("UPDATE device_api_keys SET revoked_at = now() WHERE device_id = \(acme.device.id)")
            try await Self.postUntilRefused(live, key: acme.apiKey)
            let refused = try await live.post("/api/v1/locations", apiKey: acme.apiKey, json: Fixes.object(1_000))
            ValidationTests.expectError(refused, status: 401, code: "unauthorized", "the revoked key")
            try await Self.expectRemembered(0, live, "the revoked key is forgotten")
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
            try await live.sql("SELECT pgtrack_purge_device('acme', \(acme.device.id))")
            try await live.sql("DELETE FROM devices WHERE id = \(acme.device.id)")
            try await Self.postUntilRefused(live, key: acme.apiKey)
            try await Self.expectRemembered(1, live, "only acme's key is forgotten")
            #expect(try await RoleCheckKeyRotationTests.post(live, key: globex.apiKey, fix: 2) == 202)
        }
    }

    @Test("TRUNCATE of the keys forgets every tenant's keys (it rings '*')")
    func truncated() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let globex = try await TestTenant.create(live.repository, id: "globex")
            try await Self.postUntilRemembered(live, key: acme.apiKey)
            #expect(try await RoleCheckKeyRotationTests.post(live, key: globex.apiKey, fix: 1) == 202)
            try await live.sql("TRUNCATE device_api_keys")
            try await Self.postUntilRefused(live, key: acme.apiKey)
            #expect(try await RoleCheckKeyRotationTests.post(live, key: globex.apiKey, fix: 2) == 401)
            try await Self.expectRemembered(0, live, "every key is forgotten")
        }
    }

    @Test("a device moved to another group with plain SQL is forgotten, so its next POST reads the new group")
    func regroupedBySQL() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            try await Self.postUntilRemembered(live, key: acme.apiKey)
            try await live.sql("UPDATE devices SET group_name = 'night-shift' WHERE id = \(acme.device.id)")
            // The memory lasts 60 s: only the devices trigger's ring can empty it sooner.
            let deadline = ContinuousClock.now + .seconds(30)
            while live.node.deviceKeys.count > 0 {
                try #require(ContinuousClock.now < deadline, "the node still remembers the device's old group after 30 s")
                try await Task.sleep(for: .milliseconds(50))
            }
            let device = try #require(try await live.repository.authenticateDevice(apiKey: acme.apiKey))
            #expect(device.group == "night-shift")
        }
    }

    @Test("a key revoked while the listener's connection is down is refused once it is back: losing the connection forgets every key")
    func revokedWhileListenerDown() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            try await Self.postUntilRemembered(live, key: acme.apiKey)
            // One transaction: the listener is gone (waited for) before the revocation commits
            // and rings, so unless it reconnected at once the ring is lost.
            let kills = try await TestDatabase.withConnection(live.databaseURL, applicationName: "pgtrack-test-admin") { admin in
                try await admin.query("BEGIN", logger: TestCluster.logger)
                let rows = try await admin.query("""
                    SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
                     WHERE application_name = 'pgtrack-listener' AND datname = current_database()
                    """, logger: TestCluster.logger)
                var kills = 0
                for try await count in rows.decode(Int.self) { kills = count }
                try await admin.query("UPDATE device_api_keys SET revoked_at = now() WHERE device_id = \(acme.device.id)",
                                      logger: TestCluster.logger)
                try await admin.query("COMMIT", logger: TestCluster.logger)
                return kills
            }
            #expect(kills == 1)
            _ = try await live.health(until: { ($0["listener_reconnects"] as? Int ?? 0) >= 1 && $0["device_keys_listening"] as? Bool == true })
            try await Self.postUntilRefused(live, key: acme.apiKey)
        }
    }
}
