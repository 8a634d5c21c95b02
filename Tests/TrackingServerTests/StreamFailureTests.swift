import Foundation
import PostgresNIO
import Synchronization
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// No event is lost or doubled when the listener's connection dies, or when clients connect
/// while a writer is busy.
@Suite("SSE: listener failure and connect races", .timeLimit(.minutes(3)))
struct StreamFailureTests {
    @Test("killing the listener connection mid-stream loses and duplicates nothing for two subscribers")
    func listenerTerminated() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let a = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            let b = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            #expect(try await a.opening().seq == 0)
            #expect(try await b.opening().seq == 0)

            let total = 300
            let all = (1...total).map { Int64($0) }
            let (received, kills) = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for n in 0..<total {
                        try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
                        try await Task.sleep(for: .milliseconds(3))  // keep writing while the kills happen
                    }
                }
                let result = try await Self.readKillingListener(a, live: live, at: [80, 180], through: Int64(total))
                try await group.waitForAll()
                return result
            }
            #expect(kills == 2, "pg_terminate_backend should find the pgtrack-listener connection both times")
            #expect(received == all, "subscriber A: \(Self.describeGaps(received, total: total))")
            let other = try await b.collect(through: Int64(total)).compactMap(\.seq)
            #expect(other == all, "subscriber B: \(Self.describeGaps(other, total: total))")

            // Nothing is doubled after the last expected event either.
            try await live.postPositions(Fixes.object(total), apiKey: setup.apiKey, expecting: 1)
            #expect(try await a.next("the event after the kills").seq == Int64(total + 1))
            #expect(try await b.next("the event after the kills").seq == Int64(total + 1))

            let report = try await live.health(until: { $0["listener_connected"] as? Bool == true })
            #expect((report["listener_reconnects"] as? Int ?? 0) >= 1, "health: \(report)")
        }
    }

    /// Reads `stream` through seq `last`, terminating the node's listener connection as soon as
    /// each seq of `killAt` has been read. Returns the seqs read and how many backends were killed.
    private static func readKillingListener(_ stream: SSEStream, live: LiveNode, at killAt: [Int64],
                                            through last: Int64) async throws -> ([Int64], Int) {
        try await TestDatabase.withConnection(live.databaseURL, applicationName: "pgtrack-test-admin") { admin in
            var received: [Int64] = []
            var kills = 0
            for seq in killAt {
                received += try await stream.collect(through: seq).compactMap(\.seq)
                // The listener must be up again before it can be killed again.
                _ = try await live.health(until: { $0["listener_connected"] as? Bool == true })
                kills += try await terminateListener(on: admin)
            }
            received += try await stream.collect(through: last).compactMap(\.seq)
            return (received, kills)
        }
    }

    @Test("8 clients connecting while 300 single-row SQL transactions commit each get every seq after their snapshot once, in order")
    func connectRace() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let total = 300
            let progress = Progress()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await TestDatabase.withConnection(live.databaseURL, applicationName: "pgtrack-test-writer") { writer in
                        for n in 0..<total {
                            try await Fixes.insertSQL(n, tenant: setup.tenant, device: setup.device.id, on: writer)
                            progress.value.store(n + 1, ordering: .releasing)
                            if n % 5 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                        }
                    }
                }
                for client in 0..<8 {
                    group.addTask {
                        // Client k connects once the writer has committed about k * 30 rows.
                        try await progress.wait(until: client * 30)
                        try await Self.checkClient(client, live: live, apiKey: setup.apiKey, total: total)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    /// One racing client: its snapshot at seq S matches the latest position, then S+1...total follow exactly.
    private static func checkClient(_ client: Int, live: LiveNode, apiKey: String, total: Int) async throws {
        let stream = try await live.stream("/api/v1/stream", apiKey: apiKey)
        let snapshot = try await stream.opening()
        let s = try #require(snapshot.seq, "client \(client): snapshot without id")
        let positions = try snapshot.object()["positions"] as? [[String: Any]] ?? []
        if s == 0 {
            #expect(positions.isEmpty, "client \(client): empty log but positions in the snapshot")
        } else {
            #expect(positions.count == 1 && positions.first?["seq"] as? Int == Int(s),
                    "client \(client): snapshot at seq \(s) shows \(positions.first?["seq"] ?? "nothing")")
        }
        var seqs: [Int64] = []
        if s < Int64(total) {
            seqs = try await stream.collect(through: Int64(total)).compactMap(\.seq)
        }
        let expected = s < Int64(total) ? ((s + 1)...Int64(total)).map { $0 } : []
        #expect(seqs == expected, "client \(client) (snapshot at \(s)): \(describeGaps(seqs, after: s, total: total))")
        await stream.close()
    }

    /// Terminates the node's listener connection; returns how many backends were signalled.
    static func terminateListener(on connection: PostgresConnection) async throws -> Int {
        let rows = try await connection.query("""
            SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'pgtrack-listener' AND datname = current_database()
            """, logger: TestCluster.logger)
        for try await count in rows.decode(Int.self) { return count }
        return 0
    }

    /// A short account of what is wrong with a seq list that should be `after + 1 ... total`:
    /// seqs the opening already covered, missing and repeated seqs, disorder.
    static func describeGaps(_ seqs: [Int64], after: Int64 = 0, total: Int) -> String {
        var counts: [Int64: Int] = [:]
        for seq in seqs { counts[seq, default: 0] += 1 }
        let early = seqs.filter { $0 <= after }
        let repeated = counts.filter { $0.value > 1 }.keys.sorted()
        let missing = after < Int64(total) ? ((after + 1)...Int64(total)).filter { counts[$0] == nil } : []
        let ordered = zip(seqs, seqs.dropFirst()).allSatisfy { $0 < $1 }
        return "\(seqs.count) events; at or before \(after) (already covered): \(early.prefix(20)); "
            + "missing \(missing.prefix(20)); repeated \(repeated.prefix(20)); in order: \(ordered)"
    }
}

/// How far a writer task has got, shared with the tasks that wait on it.
final class Progress: Sendable {
    let value = Atomic<Int>(0)

    /// The bound only catches a stuck writer; it is generous because the whole suite shares two
    /// cores and a loaded run can be slow without anything being wrong.
    func wait(until count: Int, timeout: Duration = .seconds(90)) async throws {
        let deadline = ContinuousClock.now + timeout
        while value.load(ordering: .acquiring) < count {
            guard ContinuousClock.now < deadline else {
                throw SSEClientError(description: "the writer did not reach \(count) rows within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}
