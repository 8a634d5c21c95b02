import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// Writes a stream's opening (and a later reset or scope change) from a task straight to its
/// channel. While the socket takes data a write does not wait; once the socket is full, each
/// write waits until it is flushed, so a slow reader slows the task writing to it.
struct ChannelStreamWriter: ResponseBodyWriter {
    let channel: any Channel

    mutating func write(_ buffer: ByteBuffer) async throws {
        guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
        let written: EventLoopFuture<Void> = channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)))
        if !channel.isWritable { try await written.get() }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        defer { channel.close(promise: nil) }
        try await channel.writeAndFlush(HTTPServerResponsePart.end(trailingHeaders.map { HTTPHeaders($0) }))
    }
}
