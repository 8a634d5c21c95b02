import Foundation
import Testing
import TrackingCore
import TrackingTestSupport

/// simulate and bench in a tiny configuration: the report's shape and the bus guarantees
/// (nothing lost, nothing duplicated), never speed.
@Suite("pgtrack simulate and bench")
struct LoadCommandTests {
    /// A port for the command's own server, below Linux's ephemeral range (32768–60999): there,
    /// the suite's thousands of client connections hold ports too, and a bind failed with
    /// "Address already in use" in a full run.
    static func port() -> String { "\(Int.random(in: 20_000..<32_768))" }

    @Test("simulate starts a server, drives a few devices and reports 0 lost and 0 duplicated as JSON")
    func simulate() async throws {
        let url = try await TestCluster.freshDatabase()
        let result = try await PgtrackProcess.run(
            ["simulate", "--drivers", "6", "--tenants", "2", "--rate", "4", "--viewers", "6", "--booking-viewers", "2",
             "--transport", "mixed", "--duration", "3", "--json", "--port", Self.port(), "--progress-seconds", "1",
             "--schema-dir", TestCluster.packageRoot.path],
            database: url)
        try #require(result.status == 0, "\(result)")
        let json = try result.json()
        let delivery = try #require(json["delivery"] as? [String: Any], "\(result.stdout)")
        let ingest = try #require(json["ingest"] as? [String: Any])
        let server = try #require(json["server"] as? [String: Any])
        #expect(delivery["lost"] as? Int == 0, "\(result)")
        #expect(delivery["duplicated"] as? Int == 0, "\(result)")
        #expect(delivery["out_of_order"] as? Int == 0)
        #expect(delivery["stream_failures"] as? Int == 0)
        #expect((delivery["events"] as? Int ?? 0) > 0)
        #expect((delivery["expected"] as? Int ?? 0) > 0)
        #expect(ingest["errors"] as? Int == 0)
        // 6 drivers at 4 Hz for 3 s have 72 ticks, each one posted (accepted or an error) or
        // skipped while the driver was behind, however slow the machine: a driver that silently
        // stopped would show here (lost counts are relative to what was accepted).
        let ticks = [ingest["requests"], ingest["errors"], ingest["skipped_ticks"]].map { $0 as? Int ?? -1_000 }
        #expect(ticks.reduce(0, +) == 72, "\(ingest)")
        #expect((ingest["requests"] as? Int ?? 0) > 0)
        let latency = try #require(delivery["latency_ms"] as? [String: Any])
        for key in ["p50", "p95", "p99", "max", "count"] { #expect(latency[key] != nil, "latency_ms.\(key)") }
        #expect(json["sse_viewers"] as? Int == 3)
        #expect(json["ws_viewers"] as? Int == 3)
        #expect((server["rss_bytes_with_viewers"] as? Int ?? 0) > 0)
        #expect((server["resources"] as? [String: Any])?["server_cpu_percent"] != nil)
        #expect(result.stderr.contains("streams open"), "progress lines go to stderr")
    }

    @Test("bench runs every phase in a tiny configuration and reports ratios with nothing lost")
    func bench() async throws {
        let url = try await TestCluster.freshDatabase()
        let result = try await PgtrackProcess.run(
            ["bench", "--workers", "2", "--tenants", "1", "--duration", "1", "--batch-size", "10", "--latency-rate", "20",
             "--fanout-clients", "3", "--fanout-rate", "100", "--snapshot-devices", "50", "--idle-connections", "10",
             "--json", "--port", Self.port(), "--schema-dir", TestCluster.packageRoot.path],
            database: url)
        try #require(result.status == 0, "\(result)")
        let json = try result.json()
        let ingest = try #require(json["ingest"] as? [[String: Any]], "\(result.stdout)")
        check(ingest.map { $0["fixes_per_request"] as? Int } == [1, 10])
        for pair in ingest {
            #expect((pair["pgtrack_positions_per_second"] as? Double ?? 0) > 0)
            #expect((pair["raw_positions_per_second"] as? Double ?? 0) > 0)
            #expect(pair["ratio"] != nil)
            #expect(pair["pgtrack_errors"] as? Int == 0)
        }
        let latency = try #require(json["latency"] as? [String: Any])
        #expect(latency["lost"] as? Int == 0, "\(result)")
        #expect(latency["duplicated"] as? Int == 0)
        #expect(latency["p99_ratio"] != nil)
        let fanout = try #require(json["fanout"] as? [String: Any])
        #expect(fanout["lost"] as? Int == 0, "\(result)")
        #expect(fanout["duplicated"] as? Int == 0)
        #expect((fanout["sse_messages_per_second"] as? Double ?? 0) > 0)
        let snapshot = try #require(json["snapshot"] as? [String: Any])
        #expect(snapshot["positions"] as? Int == 50)
        #expect((snapshot["gzip_bytes"] as? Int ?? 0) > 0)
        #expect((snapshot["gzip_bytes"] as? Int ?? 0) < (snapshot["identity_bytes"] as? Int ?? 0))
        let idle = try #require(json["idle"] as? [[String: Any]])
        #expect(idle.first?["opened"] as? Int == 10)
        #expect(idle.first?["bytes_per_connection"] != nil)
    }

    @Test("a bad option is refused with a message, before anything starts")
    func badOptions() async throws {
        try PgtrackProcess.requireBinary()
        let simulate = try await PgtrackProcess.runRaw(["simulate", "--transport", "pigeon"], environment: [:])
        #expect(simulate.status != 0)
        #expect(simulate.stderr.contains("--transport"), "\(simulate)")
        let bench = try await PgtrackProcess.runRaw(["bench", "--phases", "ingest,warp"], environment: [:])
        #expect(bench.status != 0)
        #expect(bench.stderr.contains("--phases"), "\(bench)")
        // The drivers and viewers speak plain HTTP/1.1 over NIO: a TLS target is refused up front.
        for command in ["simulate", "bench"] {
            let tls = try await PgtrackProcess.runRaw([command, "--target", "https://127.0.0.1:8443"], environment: [:])
            #expect(tls.status != 0)
            #expect(tls.stderr.contains("plain http://"), "\(tls)")
        }
    }
}
