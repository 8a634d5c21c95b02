import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// `GET /api/v1/sync/lag` and `/health`: lag = now − source time of the newest change applied;
/// healthy < 2 s ≤ warning < 5 s ≤ degraded < 10 s ≤ critical; no_data before the first event.
/// The exact boundaries are checked in SQL with a fixed clock (TrackingStoreTests'
/// SyncLagThresholdTests); here each band is reached over HTTP with events of a known age, and
/// the status must always match the lag the server reports, whatever the machine's speed.
@Suite("sync: lag status over HTTP and in /health", .timeLimit(.minutes(3)))
struct SyncLagTests {
    static func expectedStatus(_ lag: Double) -> String {
        lag < 2 ? "healthy" : lag < 5 ? "warning" : lag < 10 ? "degraded" : "critical"
    }

    @Test("no_data before the first event, then each band in turn; the worst status on /lag and /health")
    func bands() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let admin = sync.admin.accessToken
            let empty = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: admin)
            #expect(empty["status"] as? String == "no_data", "\(empty)")
            check((empty["tables"] as? [[String: Any]] ?? []).map { $0["table"] as? String } == SyncTable.allCases.map(\.rawValue))
            check((empty["tables"] as? [[String: Any]] ?? []).allSatisfy { $0["status"] as? String == "no_data" && $0["lag_seconds"] == nil })
            #expect(empty["thresholds_seconds"] as? [String: Int] == ["warning": 2, "degraded": 5, "critical": 10], "\(empty)")
            let before = try await live.get("/health").object()["cdc_lag"] as? [String: Any]
            #expect(before?["status"] as? String == "no_data" && before?["tables"] as? Int == 0, "\(String(describing: before))")

            // Each table fed an event of a known age (mid-band); a machine slow enough to push
            // the lag out of the band before it is read posts a fresher event and tries again.
            let bands: [(SyncTable, age: Double, status: String, low: Double, high: Double)] = [
                (.accounts, 0.2, "healthy", 0, 2), (.customers, 3.5, "warning", 2, 5),
                (.products, 7.5, "degraded", 5, 10), (.orders, 120, "critical", 10, .infinity),
            ]
            var lsn: Int64 = 1_000
            for (index, band) in bands.enumerated() {
                var reached = false
                // The healthy band leaves 1.8 s for a POST and two reads: a full test run on two
                // cores has taken longer than that five times in a row.
                for _ in 0..<10 where !reached {
                    lsn += 10
                    let sourceMs = Int64((Date().timeIntervalSince1970 - band.age) * 1000)
                    try await SyncAPI.apply(live, Debezium.json(Debezium.postgres(
                        "u", table: band.0.rawValue, after: Debezium.row(band.0, id: 1, n: Int(lsn)), lsn: lsn, tsMs: sourceMs)), to: sync)
                    let lag = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: admin)
                    let health = try await live.get("/health").object()["cdc_lag"] as? [String: Any] ?? [:]
                    let table = SyncAPI.table(band.0, in: lag)
                    let seconds = try #require(table["lag_seconds"] as? Double, "\(table)")
                    #expect(seconds >= band.age - 0.01, "the lag is at least the event's age: \(table)")
                    #expect(table["status"] as? String == Self.expectedStatus(seconds), "status matches the reported lag: \(table)")
                    #expect(table["last_source_ts"] as? String == Debezium.iso(sourceMs), "\(table)")
                    // The worst status of all tables fed so far, on /lag and in /health.
                    let worst = (bands[0...index].map { SyncAPI.table($0.0, in: lag)["status"] as? String ?? "?" })
                        .max { Self.rank($0) < Self.rank($1) }
                    #expect(lag["status"] as? String == worst, "\(lag)")
                    #expect(Self.rank(health["status"] as? String ?? "") >= Self.rank(worst ?? ""), "/health: \(health) vs \(lag)")
                    #expect(health["tables"] as? Int == index + 1, "/health counts the tables with data: \(health)")
                    reached = (band.low..<band.high).contains(seconds)
                    if reached { #expect(table["status"] as? String == band.status, "\(table)") }
                }
                #expect(reached, "\(band.0) reached \(band.status) within 10 tries")
            }
            let final = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: admin)
            #expect(final["status"] as? String == "critical" && SyncAPI.table(.users, in: final)["status"] as? String == "no_data", "\(final)")
            let health = try await live.get("/health")
            #expect(health.status == 200, "a lagging feed does not make the node unhealthy: \(health.body)")
            let cdc = try health.object()["cdc_lag"] as? [String: Any]
            #expect(cdc?["status"] as? String == "critical" && cdc?["tables"] as? Int == 4, "\(String(describing: cdc))")
        }
    }

    @Test("/health reports the worst status over every tenant; /lag only the caller's tenant")
    func acrossTenants() async throws {
        try await LiveNode.run { live in
            let acme = try await SyncTenant.create(live)
            let globex = try await SyncTenant.create(live, id: "globex")
            // acme is up to date (a source time ahead of this clock counts as no lag); globex is a minute behind.
            let ahead = Int64((Date().timeIntervalSince1970 + 600) * 1000)
            let behind = Int64((Date().timeIntervalSince1970 - 60) * 1000)
            try await SyncAPI.apply(live, Debezium.json(Debezium.postgres("c", table: "users", after: Debezium.row(.users, id: 1, n: 1),
                                                                          lsn: 10, tsMs: ahead)), to: acme)
            try await SyncAPI.apply(live, Debezium.json(Debezium.postgres("c", table: "orders", after: Debezium.row(.orders, id: 1, n: 1),
                                                                          lsn: 10, tsMs: behind)), to: globex)
            let acmeLag = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: acme.admin.accessToken)
            #expect(acmeLag["status"] as? String == "healthy" && SyncAPI.table(.users, in: acmeLag)["lag_seconds"] as? Double == 0, "\(acmeLag)")
            #expect(SyncAPI.table(.orders, in: acmeLag)["status"] as? String == "no_data", "globex's orders are not acme's: \(acmeLag)")
            let globexLag = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: globex.admin.accessToken)
            #expect(globexLag["status"] as? String == "critical", "\(globexLag)")
            let cdc = try await live.get("/health").object()["cdc_lag"] as? [String: Any]
            #expect(cdc?["status"] as? String == "critical" && cdc?["tables"] as? Int == 2, "\(String(describing: cdc))")
        }
    }

    static func rank(_ status: String) -> Int {
        ["no_data", "healthy", "warning", "degraded", "critical"].firstIndex(of: status) ?? -1
    }
}
