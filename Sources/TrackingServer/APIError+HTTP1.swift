import NIOCore
import NIOHTTP1
import TrackingCore

extension APIError {
    /// This error as a complete HTTP/1 response that closes the connection, for the stream
    /// connections that write without Hummingbird (same body and content type as `response`).
    func closingResponseParts(version: HTTPVersion, extraHeaders: [(String, String)] = []) -> [HTTPServerResponsePart] {
        let body = ByteBuffer(string: jsonBody)
        var headers: HTTPHeaders = ["Content-Type": "application/json; charset=utf-8",
                                    "Content-Length": String(body.readableBytes), "Connection": "close"]
        if let retryAfterSeconds { headers.add(name: "Retry-After", value: String(retryAfterSeconds)) }
        headers.add(contentsOf: extraHeaders)
        return [.head(HTTPResponseHead(version: version, status: .init(statusCode: status), headers: headers)),
                .body(.byteBuffer(body)), .end(nil)]
    }
}
