import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The ordering guard: a change is applied only when it is newer than the stored one (source
/// position when both have one, else source time), so shuffled and redelivered events end in the
/// source's state, every refused one is counted as skipped, and a delete is never undone by an
/// older update.
@Suite("sync: ordering guard", .timeLimit(.minutes(3)))
struct SyncOrderingTests {
    /// The history of a few orders in the source: creates, updates, deletes (with the full row
    /// before, as with REPLICA IDENTITY FULL), each at a growing LSN.
    static func history() -> (events: [[String: Any]], final: [String: (data: [String: Any], deleted: Bool, lsn: Int64)]) {
        var events: [[String: Any]] = []
        var final: [String: (data: [String: Any], deleted: Bool, lsn: Int64)] = [:]
        var lsn: Int64 = 10_000
        for order in 1...6 {
            let id = "ord-\(order)"
            var current = Debezium.row(.orders, id: id, n: order)
            lsn += 16
            events.append(Debezium.postgres("c", table: "orders", after: current, lsn: lsn, tsMs: Debezium.baseMs + lsn))
            final[id] = (current, false, lsn)
            for step in 0..<(order % 4) {
                let next = Debezium.row(.orders, id: id, n: order * 10 + step + 1)
                lsn += 16
                events.append(Debezium.postgres("u", table: "orders", before: current, after: next, lsn: lsn, tsMs: Debezium.baseMs + lsn))
                current = next
                final[id] = (current, false, lsn)
            }
            if order % 3 == 0 {
                lsn += 16
                events.append(Debezium.postgres("d", table: "orders", before: current, lsn: lsn, tsMs: Debezium.baseMs + lsn))
                final[id] = (current, true, lsn)
            }
        }
        return (events, final)
    }

    @Test("shuffled, duplicated delivery in several batches converges to the source's state; every refused event is skipped",
          arguments: [UInt64(1), 2, 3])
    func shuffledAndDuplicated(seed: UInt64) async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let (events, final) = Self.history()
            var generator = SeededGenerator(state: seed)
            // Every event twice, a third of them three times, all shuffled, in batches of 7.
            var delivery = events + events + events.enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
            delivery.shuffle(using: &generator)
            var applied = 0
            var skipped = 0
            for start in stride(from: 0, to: delivery.count, by: 7) {
                let answer = try await SyncAPI.apply(live, Debezium.array(Array(delivery[start..<min(start + 7, delivery.count)])), to: sync)
                applied += answer["applied"] as? Int ?? 0
                skipped += answer["skipped"] as? Int ?? 0
            }
            #expect(applied + skipped == delivery.count, "every event applied or skipped (seed \(seed))")
            #expect(skipped >= delivery.count - events.count, "at least every redelivery is skipped (seed \(seed))")

            let stored = try await SyncSQL.rows(live, .orders, tenant: sync.id)
            #expect(stored.map(\.id) == final.keys.sorted(), "seed \(seed)")
            for row in stored {
                let expected = try #require(final[row.id])
                #expect(row.deleted == expected.deleted, "seed \(seed): \(row)")
                #expect(row.position == Debezium.lsnText(expected.lsn), "seed \(seed): \(row)")
                let data = try JSONSerialization.jsonObject(with: Data(row.data.utf8)) as? [String: Any] ?? [:]
                #expect(Debezium.sameJSON(data, expected.data), "seed \(seed): \(row)")
            }
            // The API agrees, and so do the counters.
            let live0 = try await SyncAPI.read(live, "/api/v1/sync/orders", bearer: sync.admin.accessToken)
            check(SyncAPI.rows(live0).compactMap { $0["id"] as? String } == final.filter { !$0.value.deleted }.keys.sorted())
            let lag = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: sync.admin.accessToken)
            let orders = SyncAPI.table(.orders, in: lag)
            #expect(orders["events_applied"] as? Int == applied && orders["events_skipped"] as? Int == skipped, "\(orders)")
            let newest = try #require(final.values.map(\.lsn).max())
            #expect(orders["last_source_position"] as? String == Debezium.lsnText(newest), "the newest change applied: \(orders)")
        }
    }

    @Test("a late update after a delete does not resurrect the row (by LSN, by binlog position and by time alone); a newer create does")
    func lateUpdateAfterDelete() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let ts = Debezium.baseMs
            let row = Debezium.row(.customers, id: 7, n: 1)
            let late = Debezium.row(.customers, id: 7, n: 2)
            // PostgreSQL: create @100, delete @300, then the update @200 arrives.
            try await SyncAPI.apply(live, Debezium.array([
                Debezium.postgres("c", table: "customers", after: row, lsn: 100, tsMs: ts),
                Debezium.postgres("d", table: "customers", before: row, lsn: 300, tsMs: ts + 2),
            ]), to: sync)
            let lateAnswer = try await SyncAPI.apply(live, Debezium.json(
                Debezium.postgres("u", table: "customers", before: row, after: late, lsn: 200, tsMs: ts + 1)), to: sync)
            #expect(SyncAPI.outcomes(lateAnswer) == ["skipped"] && lateAnswer["skipped"] as? Int == 1, "\(lateAnswer)")
            let tombstone = try await SyncAPI.read(live, "/api/v1/sync/customers/7", bearer: sync.admin.accessToken)
            #expect(tombstone["deleted"] as? Bool == true && tombstone["source_position"] as? String == Debezium.lsnText(300), "\(tombstone)")
            #expect((tombstone["data"] as? [String: Any])?["name"] as? String == "Customer 1", "\(tombstone)")
            #expect(SyncAPI.rows(try await SyncAPI.read(live, "/api/v1/sync/customers", bearer: sync.admin.accessToken)).isEmpty)

            // MySQL: the binlog file number outranks the position inside it, then the row.
            let order = Debezium.row(.orders, id: "o-1", n: 1)
            try await SyncAPI.apply(live, Debezium.array([
                Debezium.mysql("c", table: "orders", after: order, file: "mysql-bin.000009", pos: 90_000, tsMs: ts),
                Debezium.mysql("d", table: "orders", before: order, file: "mysql-bin.000010", pos: 4, row: 1, tsMs: ts),
            ]), to: sync)
            let stale = try await SyncAPI.apply(live, Debezium.array([
                Debezium.mysql("u", table: "orders", before: order, after: Debezium.row(.orders, id: "o-1", n: 2),
                               file: "mysql-bin.000009", pos: 95_000, tsMs: ts + 5_000),
                Debezium.mysql("u", table: "orders", before: order, after: Debezium.row(.orders, id: "o-1", n: 3),
                               file: "mysql-bin.000010", pos: 4, row: 0, tsMs: ts + 5_000),
            ]), to: sync)
            #expect(SyncAPI.outcomes(stale) == ["skipped", "skipped"], "a later time does not beat an earlier position: \(stale)")
            let order1 = try await SyncAPI.read(live, "/api/v1/sync/orders/o-1", bearer: sync.admin.accessToken)
            #expect(order1["deleted"] as? Bool == true && order1["source_position"] as? String == "mysql-bin.000010:4:1", "\(order1)")

            // A connector without a position (SQL Server's change_lsn is not read): time alone orders.
            func noPosition(_ op: String, _ id: Int, name: String, at ms: Int64) -> [String: Any] {
                let image: [String: Any] = ["id": id, "name": name]
                return ["op": op, "before": op == "d" ? image : NSNull(), "after": op == "d" ? NSNull() : image, "ts_ms": ms + 50,
                        "source": ["connector": "sqlserver", "name": "crm", "db": "crm", "schema": "dbo", "table": "accounts",
                                   "ts_ms": ms, "change_lsn": "00000027:00000758:0003", "commit_lsn": "00000027:00000758:0005"]]
            }
            let timeOnly = try await SyncAPI.apply(live, Debezium.array([
                noPosition("c", 5, name: "first", at: ts), noPosition("d", 5, name: "first", at: ts + 2_000),
                noPosition("u", 5, name: "late", at: ts + 1_000), noPosition("d", 5, name: "first", at: ts + 2_000),
            ]), to: sync)
            #expect(SyncAPI.outcomes(timeOnly) == ["applied", "applied", "skipped", "skipped"], "\(timeOnly)")
            let account = try await SyncAPI.read(live, "/api/v1/sync/accounts/5", bearer: sync.admin.accessToken)
            #expect(account["deleted"] as? Bool == true && account["source_position"] == nil, "\(account)")
            #expect(account["source_ts"] as? String == Debezium.iso(ts + 2_000), "\(account)")
            let accounts = try #require(try await SyncSQL.state(live, .accounts))
            #expect(accounts.applied == 2 && accounts.skipped == 2 && accounts.lastPosition == nil, "\(accounts)")

            // The source re-creates the customer later: a newer position brings it back.
            let again = Debezium.row(.customers, id: 7, n: 3)
            try await SyncAPI.apply(live, Debezium.json(Debezium.postgres("c", table: "customers", after: again, lsn: 400, tsMs: ts + 3)), to: sync)
            let back = try await SyncAPI.read(live, "/api/v1/sync/customers/7", bearer: sync.admin.accessToken)
            #expect(back["deleted"] == nil && (back["data"] as? [String: Any])?["name"] as? String == "Customer 3", "\(back)")
        }
    }

    @Test("the position decides over the time when both events have one (a source clock going back); at an equal position the time breaks the tie")
    func positionBeatsTime() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let ts = Debezium.baseMs
            let answer = try await SyncAPI.apply(live, Debezium.array([
                Debezium.postgres("c", table: "users", after: Debezium.row(.users, id: "u1", n: 1), lsn: 100, tsMs: ts + 60_000),
                // The source clock stepped back a minute: still newer by LSN.
                Debezium.postgres("u", table: "users", after: Debezium.row(.users, id: "u1", n: 2), lsn: 200, tsMs: ts),
                // The same event again (position and time): a redelivery, skipped.
                Debezium.postgres("u", table: "users", after: Debezium.row(.users, id: "u1", n: 2), lsn: 200, tsMs: ts),
                // An older position with a later time: skipped.
                Debezium.postgres("u", table: "users", after: Debezium.row(.users, id: "u1", n: 9), lsn: 150, tsMs: ts + 90_000),
            ]), to: sync)
            #expect(SyncAPI.outcomes(answer) == ["applied", "applied", "skipped", "skipped"], "\(answer)")
            let user = try await SyncAPI.read(live, "/api/v1/sync/users/u1", bearer: sync.admin.accessToken)
            #expect((user["data"] as? [String: Any])?["name"] as? String == "User 2" && user["source_ts"] as? String == Debezium.iso(ts),
                    "\(user)")
            // The lag follows the newest change applied (by position), not the latest clock.
            let users = SyncAPI.table(.users, in: try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: sync.admin.accessToken))
            #expect(users["last_source_position"] as? String == Debezium.lsnText(200) && users["events_skipped"] as? Int == 2, "\(users)")

            // Two changes at one position (a MySQL transaction whose row events share file and
            // pos) are told apart by time: the later one wins, whatever order they arrive in.
            let tie = try await SyncAPI.apply(live, Debezium.array([
                Debezium.mysql("u", table: "users", after: Debezium.row(.users, id: "u2", n: 2), file: "mysql-bin.000002", pos: 700, tsMs: ts + 1_000),
                Debezium.mysql("u", table: "users", after: Debezium.row(.users, id: "u2", n: 1), file: "mysql-bin.000002", pos: 700, tsMs: ts),
            ]), to: sync)
            #expect(SyncAPI.outcomes(tie) == ["applied", "skipped"], "\(tie)")
            let u2 = try await SyncAPI.read(live, "/api/v1/sync/users/u2", bearer: sync.admin.accessToken)
            #expect((u2["data"] as? [String: Any])?["name"] as? String == "User 2", "\(u2)")
        }
    }
}
