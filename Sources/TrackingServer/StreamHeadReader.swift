import HTTPTypes
import NIOCore
import NIOHTTP1

/// A stream request on a connection of its own, once its head is read.
struct StreamRequest: Sendable {
    let head: HTTPRequest
    let version: HTTPVersion
    let channel: any Channel
    /// Writes the stream's live events once it is open.
    let connection: StreamConnection
}

/// Behind the HTTP decoder of a stream connection: hands the head to the connection, then
/// removes the decoder and itself, so an open stream keeps no parser state.
final class StreamHeadReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart

    private let connection: StreamConnection
    private let decoderName: String

    init(connection: StreamConnection, decoderName: String) {
        self.connection = connection
        self.decoderName = decoderName
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data) else { return }
        connection.read(request, channel: context.channel)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        context.pipeline.syncOperations.removeHandler(name: decoderName, promise: nil)
    }

    /// The decoder's errors travel towards the tail, past this handler: a head it cannot read.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.headUnreadable(error)
    }
}
