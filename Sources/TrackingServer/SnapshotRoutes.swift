import CompressNIO
import Hummingbird
import NIOCore
import TrackingCore
import TrackingStore

/// `GET /api/v1/snapshot`: the latest position of every device the caller may see, with the
/// seq it is consistent with (resume a stream from it with `?since=`). gzip when accepted.
struct SnapshotRoutes {
    let authenticator: Authenticator
    let snapshots: SnapshotCoalescer

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/snapshot", use: snapshot)
    }

    @Sendable func snapshot(request: Request, context: AppRequestContext) async throws -> Response {
        // Any snapshot that starts after the request arrived is fresh enough for it.
        let arrived = ContinuousClock.now
        let principal = try await authenticator.authenticate(request)
        let filter = authenticator.visibility(of: principal)
        guard let snapshot = try await snapshots.snapshot(of: .tenant(principal.tenant), notBefore: arrived) else {
            throw APIError.notFound("tenant \(principal.tenant) does not exist")
        }
        var body = ByteBuffer(string: #"{"seq":\#(snapshot.seq),"positions":\#(snapshot.positionsJSON(filter))}"#)
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8", .vary: "Accept-Encoding"]
        if Self.acceptsGzip(request.headers[.acceptEncoding]) {
            body = try body.compress(with: .gzip())
            headers[.contentEncoding] = "gzip"
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
    }

    /// True when Accept-Encoding lists gzip without `q=0`.
    static func acceptsGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard parts.first == "gzip" || parts.first == "*" else { continue }
            let quality = parts.dropFirst().first { $0.hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) }
            return quality != 0
        }
        return false
    }
}
