import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import TrackingCore
import TrackingStore

/// Serves SSE streams that arrive as the first request of a connection (see
/// `StreamFirstChannel`), with the same checks, answers and events as the routes.
///
/// The work of opening a stream (authentication, subscription, the snapshot or replay) runs in
/// the connection's task, which then ends; the live part is `StreamConnection`'s, on the event
/// loop. A Swift task keeps the stack memory of the deepest call it ever made for as long as it
/// lives, so an open stream holds no task at all. `open` counts the streams for the shutdown.
struct EventLoopStreams: Sendable {
    let routes: StreamRoutes
    let serverName: String
    let open: OpenStreams
    let gate: DatabaseGate

    func serve(_ stream: StreamRequest, logger: Logger) async {
        let request = Request(head: stream.head, body: RequestBody(buffer: ByteBuffer()))
        var headWritten = false
        do {
            guard let endpoint = StreamEndpoint(path: Substring(request.uri.path)) else {
                // The raw path named a stream, the decoded one does not (e.g. `%2F` in an id).
                throw HTTPError(.notFound)
            }
            guard !gate.isDown else { throw APIError.databaseUnavailable }
            let opened = try await routes.open(endpoint, request: request, logger: logger, consumer: stream.connection)
            guard let subscription = opened.lease.take() else { return }
            var headers = HTTPHeaders(StreamRoutes.responseHeaders)
            headers.add(name: "Server", value: serverName)
            headers.add(name: "Date", value: Self.httpDate())
            headWritten = true
            do {
                try await stream.channel.writeAndFlush(
                    HTTPServerResponsePart.head(HTTPResponseHead(version: stream.version, status: .ok, headers: headers)))
            } catch {
                // Nobody else holds the subscription yet (session.open cancels it on its own errors).
                await subscription.cancel()
                throw error
            }
            var writer = ChannelStreamWriter(channel: stream.channel)
            let progress = try await opened.session.open(subscription: subscription, liveSince: opened.liveSince,
                                                         viewer: opened.viewer, writer: &writer)
            stream.connection.goLive(session: opened.session, progress: progress, grace: routes.slowConsumerGrace)
        } catch {
            if isConnectionLoss(error) { gate.suspect() }
            if headWritten {
                logger.debug("stream failed while opening", metadata: ["error": "\(error)"])
                stream.channel.close(promise: nil)
                return
            }
            answer(APIError(answering: error, to: request, logger: logger), to: stream.version, on: stream.channel)
        }
    }

    /// The JSON error the routes would give, then the connection closes. The close follows the
    /// write on the event loop, not after this task resumes: on a loaded machine a task can
    /// wait long for a thread, and the client would wait as long for the close.
    private func answer(_ error: APIError, to version: HTTPVersion, on channel: any Channel) {
        let parts = error.closingResponseParts(version: version, extraHeaders: [("Server", serverName), ("Date", Self.httpDate())])
        for part in parts.dropLast() { channel.write(part, promise: nil) }
        channel.writeAndFlush(parts.last!).whenComplete { _ in channel.close(promise: nil) }
    }

    /// `Date` in the HTTP format (RFC 9110 IMF-fixdate).
    static func httpDate(_ date: Date = Date()) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: date)
    }
}
