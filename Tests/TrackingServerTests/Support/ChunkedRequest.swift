import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

extension LiveNode {
    /// Sends `json` with `Transfer-Encoding: chunked` and no Content-Length, as streaming
    /// clients (and proxies that re-chunk) do. A server must read such a body like any other.
    func requestChunked(_ method: HTTPMethod, _ path: String, bearer: String, json: String) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(bearer)")
        request.headers.add(name: "Content-Type", value: "application/json")
        let (chunks, continuation) = AsyncStream<ByteBuffer>.makeStream()
        continuation.yield(ByteBuffer(string: json))
        continuation.finish()
        request.body = .stream(chunks, length: .unknown)
        let response = try await http.execute(request, timeout: .seconds(20))
        let bytes = try await response.body.collect(upTo: 4 << 20)
        return Reply(status: Int(response.status.code), body: String(buffer: bytes))
    }
}
