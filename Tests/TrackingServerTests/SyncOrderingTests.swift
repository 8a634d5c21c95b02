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

    /// Now in milliseconds since 1970: the lag is measured against the server's clock.
    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000) }

    /// The orders table on GET /api/v1/sync/lag.
    static func ordersLag(_ live: LiveNode, _ sync: SyncTenant) async throws -> [String: Any] {
        SyncAPI.table(.orders, in: try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: sync.admin.accessToken))
    }

    @Test("MySQL failover: a newer change from another server_id at binlog file 1 is applied and the lag recovers; older redeliveries are still skipped")
    func mysqlFailover() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let before = Self.nowMs() - 600_000  // ten minutes ago: the lag is critical
            func order(_ n: Int) -> [String: Any] { Debezium.row(.orders, id: "o-1", n: n) }
            // Server 1 wrote the order deep into its binlog.
            let old = [
                Debezium.mysql("c", table: "orders", after: order(1), file: "mysql-bin.000042", pos: 1_000, tsMs: before - 1_000, serverID: 1),
                Debezium.mysql("u", table: "orders", before: order(1), after: order(2), file: "mysql-bin.000042", pos: 2_000, tsMs: before,
                               serverID: 1),
            ]
            #expect(SyncAPI.outcomes(try await SyncAPI.apply(live, Debezium.array(old), to: sync)) == ["applied", "applied"])
            let stale = try await Self.ordersLag(live, sync)
            #expect(stale["status"] as? String == "critical", "\(stale)")

            // Server 2 takes over; its binlog numbers start again at 1.
            let now = Self.nowMs()
            let first = Debezium.mysql("u", table: "orders", before: order(2), after: order(3), file: "mysql-bin.000001", pos: 157,
                                       tsMs: now - 1_000, serverID: 2)
            let failover = try await SyncAPI.apply(live, Debezium.array([
                first,
                Debezium.mysql("c", table: "orders", after: Debezium.row(.orders, id: "o-2", n: 1), file: "mysql-bin.000001", pos: 400,
                               tsMs: now, serverID: 2),
            ]), to: sync)
            #expect(SyncAPI.outcomes(failover) == ["applied", "applied"], "newer by time, from another server: \(failover)")

            // Server 1's changes redelivered (older in time) and server 2's first again: skipped.
            let redelivered = try await SyncAPI.apply(live, Debezium.array([old[1], old[0], first]), to: sync)
            #expect(SyncAPI.outcomes(redelivered) == ["skipped", "skipped", "skipped"], "\(redelivered)")
            let row = try await SyncAPI.read(live, "/api/v1/sync/orders/o-1", bearer: sync.admin.accessToken)
            #expect(Debezium.sameJSON(row["data"], order(3)) && row["source_position"] as? String == "mysql-bin.000001:157:0", "\(row)")

            // The lag follows server 2's newest change.
            let recovered = try await Self.ordersLag(live, sync)
            #expect(recovered["last_source_position"] as? String == "mysql-bin.000001:400:0", "\(recovered)")
            #expect(recovered["status"] as? String != "critical" && recovered["events_applied"] as? Int == 4
                    && recovered["events_skipped"] as? Int == 3, "\(recovered)")
        }
    }

    @Test("MySQL RESET MASTER on the same server_id: back at binlog file 1 (or later by more than a minute) is a new epoch, newer; the old epoch's redeliveries are skipped")
    func mysqlResetMaster() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let before = Self.nowMs() - 600_000
            func order(_ id: String, _ n: Int) -> [String: Any] { Debezium.row(.orders, id: id, n: n) }
            let old = [
                Debezium.mysql("c", table: "orders", after: order("o-1", 1), file: "mysql-bin.000042", pos: 1_000, tsMs: before, serverID: 7),
                Debezium.mysql("c", table: "orders", after: order("o-3", 1), file: "mysql-bin.000042", pos: 3_000, tsMs: before, serverID: 7),
            ]
            try await SyncAPI.apply(live, Debezium.array(old), to: sync)

            // RESET MASTER: o-1 changes again two seconds later in the new binlog.000001; o-3 only
            // ten minutes later, when the binlog has rotated to file 3.
            let now = Self.nowMs()
            let reset = try await SyncAPI.apply(live, Debezium.array([
                Debezium.mysql("u", table: "orders", after: order("o-1", 2), file: "mysql-bin.000001", pos: 157, tsMs: before + 2_000, serverID: 7),
                Debezium.mysql("u", table: "orders", after: order("o-3", 2), file: "mysql-bin.000003", pos: 500, tsMs: now, serverID: 7),
            ]), to: sync)
            #expect(SyncAPI.outcomes(reset) == ["applied", "applied"], "\(reset)")

            // The old epoch redelivered, and an older change of the new one: skipped.
            let late = try await SyncAPI.apply(live, Debezium.array(old + [
                Debezium.mysql("u", table: "orders", after: order("o-1", 9), file: "mysql-bin.000001", pos: 100, tsMs: before + 1_000, serverID: 7),
            ]), to: sync)
            #expect(SyncAPI.outcomes(late) == ["skipped", "skipped", "skipped"], "\(late)")
            for (id, position) in [("o-1", "mysql-bin.000001:157:0"), ("o-3", "mysql-bin.000003:500:0")] {
                let row = try await SyncAPI.read(live, "/api/v1/sync/orders/\(id)", bearer: sync.admin.accessToken)
                #expect(Debezium.sameJSON(row["data"], order(id, 2)) && row["source_position"] as? String == position, "\(row)")
            }
            let lag = try await Self.ordersLag(live, sync)
            #expect(lag["last_source_position"] as? String == "mysql-bin.000003:500:0" && lag["status"] as? String != "critical", "\(lag)")
        }
    }

    @Test("MySQL GTIDs: one source uuid's transaction numbers order changes from any server's binlog; another uuid falls back to the time")
    func mysqlGTIDs() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let ts = Debezium.baseMs
            let uuidA = "3E11FA47-71CA-11E1-9E33-C80AA9429562"
            let uuidB = "6B2F4C10-2A0E-11EF-8D6B-0242AC120003"
            func order(_ n: Int) -> [String: Any] { Debezium.row(.orders, id: "o-1", n: n) }
            let created = Debezium.mysql("c", table: "orders", after: order(1), file: "mysql-bin.000042", pos: 1_000, tsMs: ts,
                                         gtid: "\(uuidA):100", serverID: 1)
            try await SyncAPI.apply(live, Debezium.json(created), to: sync)
            // The connector moved to the replica: server 1's transactions replicated into the
            // replica's binlog keep their GTID and server_id, at the replica's (lower) position.
            let answer = try await SyncAPI.apply(live, Debezium.array([
                Debezium.mysql("u", table: "orders", after: order(2), file: "mysql-bin.000007", pos: 900, tsMs: ts + 1_000,
                               gtid: "\(uuidA):101", serverID: 1),
                Debezium.mysql("u", table: "orders", after: order(9), file: "mysql-bin.000007", pos: 1_200, tsMs: ts - 1_000,
                               gtid: "\(uuidA):99", serverID: 1),
                // The replica, now primary, writes transactions of its own uuid.
                Debezium.mysql("u", table: "orders", after: order(3), file: "mysql-bin.000007", pos: 1_500, tsMs: ts + 2_000,
                               gtid: "\(uuidB):1", serverID: 2),
                created,
            ]), to: sync)
            #expect(SyncAPI.outcomes(answer) == ["applied", "skipped", "applied", "skipped"], "\(answer)")
            let row = try await SyncAPI.read(live, "/api/v1/sync/orders/o-1", bearer: sync.admin.accessToken)
            #expect(Debezium.sameJSON(row["data"], order(3)), "\(row)")
        }
    }
}
