import Hummingbird
import TrackingCore
import TrackingStore

/// `GET /health` (details) and `GET /health/ready` (200 only when this node can serve streams).
struct HealthRoutes {
    let repository: TrackingRepository
    let listener: NotificationListener
    let hub: FanOutHub
    let gate: DatabaseGate
    /// The database check's deadline: a load balancer must get its 503 before its own timeout.
    let timeout: Duration

    func register(on router: Router<AppRequestContext>) {
        router.get("/health", use: health)
        router.get("/health/ready", use: ready)
    }

    struct Report: Encodable {
        let status: String
        let database: Bool
        let databaseError: String?
        let listenerConnected: Bool
        let listenerReconnects: Int
        let subscribers: Int
        let channelsListened: Int
        let notificationQueueUsage: Double?
        /// Whether API keys may be answered from memory (the key channel is LISTENed), and how
        /// many are remembered.
        let deviceKeysListening: Bool?
        let deviceKeysRemembered: Int?
        /// The worst CDC lag status over every tenant's synced tables, and how many have data.
        /// A lagging sync feed does not make the node unhealthy: streams still work.
        let cdcLag: CDCLag?

        struct CDCLag: Encodable {
            let status: String
            let tables: Int
        }

        enum CodingKeys: String, CodingKey {
            case cdcLag = "cdc_lag"
            case status, database, databaseError = "database_error", listenerConnected = "listener_connected"
            case listenerReconnects = "listener_reconnects", subscribers, channelsListened = "channels_listened"
            case notificationQueueUsage = "notification_queue_usage"
            case deviceKeysListening = "device_keys_listening", deviceKeysRemembered = "device_keys_remembered"
        }
    }

    func report() async -> Report {
        var usage: Double?
        var databaseError: String?
        let repository = self.repository
        do {
            // Abandoned, not awaited, past the deadline: with the database gone the pool holds
            // the query until connecting fails for good.
            usage = try await withDeadline(timeout, "the database check") { try await repository.notificationQueueUsage() }
        } catch {
            databaseError = error is DeadlineExceeded ? "no answer from the database within \(timeout)" : describeDatabaseError(error)
            gate.suspect()
        }
        let listenerStatus = await listener.status
        let cdcLag = usage == nil ? nil : try? await withDeadline(timeout, "the CDC lag check") { try await repository.worstSyncLag() }
        let healthy = usage != nil && listenerStatus.connected
        return Report(status: healthy ? "ok" : "degraded", database: usage != nil, databaseError: databaseError,
                      listenerConnected: listenerStatus.connected, listenerReconnects: listenerStatus.reconnects,
                      subscribers: hub.subscriberCount, channelsListened: listenerStatus.topics,
                      notificationQueueUsage: usage, deviceKeysListening: repository.deviceKeys?.isListening,
                      deviceKeysRemembered: repository.deviceKeys?.count, cdcLag: cdcLag.map { .init(status: $0.status, tables: $0.tables) })
    }

    @Sendable func health(request: Request, context: AppRequestContext) async throws -> Response {
        let report = await report()
        return try encoded(report, status: report.status == "ok" ? .ok : .serviceUnavailable)
    }

    @Sendable func ready(request: Request, context: AppRequestContext) async throws -> Response {
        let report = await report()
        let ok = report.status == "ok"
        return jsonResponse(#"{"ready":\#(ok)}"#, status: ok ? .ok : .serviceUnavailable)
    }

    private func encoded(_ report: Report, status: HTTPResponse.Status) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return jsonResponse(String(decoding: try encoder.encode(report), as: UTF8.self), status: status)
    }
}

import Foundation
