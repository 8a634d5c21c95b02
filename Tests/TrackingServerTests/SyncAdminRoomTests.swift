import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The `cdc_lag` event, logged per tenant by the node's timer, reaches the tenant's admins in the
/// `admin:<tenant>` room over SSE (`/api/v1/admin/stream`) and WebSocket (`/ws`), never other
/// tenants, never non-admins, never the tenant stream.
@Suite("sync: cdc_lag in the admin room", .timeLimit(.minutes(3)))
struct SyncAdminRoomTests {
    /// A node whose lag timer ticks fast, so tests wait fractions of a second, not 5 s.
    static func run(_ body: @Sendable @escaping (LiveNode) async throws -> Void) async throws {
        try await LiveNode.run({ $0.cdcLagInterval = .milliseconds(250) }, body)
    }

    /// The next `cdc_lag` whose table `table` has applied `applied` events (earlier ticks may predate the post).
    static func lagEvent(_ next: () async throws -> (type: String?, json: [String: Any]), table: SyncTable, applied: Int) async throws -> [String: Any] {
        for _ in 0..<100 {
            let (type, json) = try await next()
            #expect(type == "cdc_lag", "only cdc_lag in an admin room: \(json)")
            if SyncAPI.table(table, in: json)["events_applied"] as? Int == applied { return json }
        }
        throw SSEClientError(description: "no cdc_lag with \(applied) \(table) applied in 100 events")
    }

    @Test("SSE: an admin's stream opens with a snapshot holding the lag, then gets cdc_lag events with seqs; others are refused")
    func serverSentEvents() async throws {
        try await Self.run { live in
            let staff = try await TenantStaff.create(live)
            let acmeKey = try #require(try await live.repository.createSyncKey(tenant: staff.acme.tenant, name: "d")).apiKey
            let globex = try await SyncTenant.create(live, id: "globex")
            try await SyncAPI.apply(live, Debezium.json(Debezium.postgres("c", table: "products", after: Debezium.row(.products, id: 1, n: 1),
                                                                          lsn: 5, tsMs: Debezium.baseMs)), to: globex)

            let stream = try await live.stream("/api/v1/admin/stream", bearer: staff.admin.accessToken)
            let snapshot = try await stream.opening()
            let opening = try snapshot.object()
            let lag = try #require(opening["cdc_lag"] as? [String: Any], "\(opening)")
            #expect(lag["status"] as? String == "no_data" && (lag["tables"] as? [Any])?.count == 5, "\(opening)")
            #expect(snapshot.seq != nil && opening["positions"] == nil, "an admin room holds no positions: \(opening)")

            let reply = try await SyncAPI.post(live, Debezium.json(Debezium.postgres(
                "c", table: "customers", after: Debezium.row(.customers, id: 1, n: 1), lsn: 10, tsMs: Debezium.baseMs)), apiKey: acmeKey)
            #expect(reply.status == 200)
            var lastSeq = snapshot.seq ?? 0
            let event = try await Self.lagEvent({
                let event = try await stream.next("a cdc_lag event")
                let seq = try #require(event.seq, "every event carries its seq: \(event)")
                #expect(seq > lastSeq, "seqs grow: \(seq) after \(lastSeq)")
                lastSeq = seq
                return (event.event, try event.object())
            }, table: .customers, applied: 1)
            #expect(event["type"] as? String == "cdc_lag" && event["seq"] as? Int == Int(lastSeq), "\(event)")
            #expect(event["status"] as? String == "critical", "a 2024 source time is far behind: \(event)")
            #expect(SyncAPI.table(.products, in: event)["status"] as? String == "no_data", "globex's products are not acme's: \(event)")
            #expect(event["at"] is String)

            // A reconnect with Last-Event-ID replays what was missed: cdc_lag events after that seq.
            let resumed = try await live.stream("/api/v1/admin/stream", bearer: staff.admin.accessToken, lastEventID: String(lastSeq - 1))
            let replayed = try await resumed.next("the replayed cdc_lag")
            #expect(replayed.event == "cdc_lag" && replayed.seq == lastSeq, "\(replayed)")

            for (role, user) in staff.nonAdmins {
                ValidationTests.expectError(try await live.get("/api/v1/admin/stream", bearer: user.accessToken), status: 403,
                                            code: "forbidden", "\(role) on the admin stream")
            }
            ValidationTests.expectError(try await live.get("/api/v1/admin/stream", apiKey: staff.acme.apiKey), status: 403,
                                        code: "forbidden", "a device on the admin stream")
            ValidationTests.expectError(try await live.get("/api/v1/admin/stream"), status: 401, code: "unauthorized", "anonymous")
        }
    }

    @Test("WebSocket: an admin joins admin:<tenant> and gets cdc_lag there; non-admins and other tenants' rooms are refused")
    func webSocket() async throws {
        try await Self.run { live in
            try await live.withSockets { ws in
                let staff = try await TenantStaff.create(live)
                let key = try #require(try await live.repository.createSyncKey(tenant: staff.acme.tenant, name: "d")).apiKey
                let globex = try await SyncTenant.create(live, id: "globex")

                let socket = try await ws.open("/ws", bearer: staff.admin.accessToken)
                let opening = try await socket.joinRoom("admin:acme")
                #expect((opening.object["cdc_lag"] as? [String: Any])?["status"] as? String == "no_data", "\(opening)")
                // A tenant room on the same socket: it must never carry cdc_lag.
                _ = try await socket.joinRoom("tenant:acme")

                #expect(try await SyncAPI.post(live, Debezium.json(Debezium.postgres(
                    "c", table: "orders", after: Debezium.row(.orders, id: 1, n: 1), lsn: 10, tsMs: Debezium.baseMs)), apiKey: key).status == 200)
                let event = try await Self.lagEvent({
                    let message = try await socket.next("a cdc_lag message")
                    #expect(message.room == "admin:acme", "cdc_lag only in the admin room: \(message)")
                    return (message.type, message.object)
                }, table: .orders, applied: 1)
                #expect(event["seq"] is Int && event["status"] as? String == "critical", "\(event)")

                for (role, user) in staff.nonAdmins {
                    let other = try await ws.open("/ws", bearer: user.accessToken)
                    try await other.join("admin:acme")
                    let refused = try await other.next("the refusal")
                    #expect(refused.type == "error" && refused.code == "room_error" && refused.room == "admin:acme", "\(role): \(refused)")
                    try await other.expectQuiet("\(role) gets no cdc_lag")
                }
                // acme's admin may not join globex's admin room, nor globex's admin acme's.
                try await socket.join("admin:globex")
                var refusal: WSMessage?
                for _ in 0..<50 {
                    let message = try await socket.next("the refusal of admin:globex")
                    if message.type == "error" { refusal = message; break }
                }
                #expect(refusal?.code == "room_error" && refusal?.room == "admin:globex", "\(String(describing: refusal))")
                let globexSocket = try await ws.open("/ws", bearer: globex.admin.accessToken)
                try await globexSocket.join("admin:acme")
                #expect(try await globexSocket.next("the refusal").code == "room_error")
            }
        }
    }
}
