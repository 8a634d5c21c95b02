import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// One simulated vehicle posting single fixes at a steady rate over `POST /api/v1/locations`,
/// on a keep-alive connection of its own.
///
/// The driver lives on its connection's event loop: a scheduled tick writes the POST and the
/// response handler records it, with no task in between. Over AsyncHTTPClient, with a task per
/// driver sleeping between posts, the 1,000 drivers of the reference scenario cost the
/// simulator ~25 % of a core: load it added to the machine it measures, and time it added to
/// every latency it reports.
struct DriverLoop {
    let driver: Fleet.Driver
    let interval: Duration
    let host: String
    let port: Int
    let counters: LoadCounters
    let ingestLatency: LatencyRecorder

    /// How long a POST may wait for its answer before it counts as failed (and the connection
    /// is closed).
    static let answerTimeout = TimeAmount.seconds(30)

    /// Posts until `end`; returns how many fixes the server accepted. A POST that fails, is
    /// refused or times out is counted in `counters.postErrors`. A connection that cannot be
    /// opened, or is lost, ends the driver, and every post it would still have made counts as
    /// an error. A tick that finds the driver still waiting for an earlier answer that already
    /// has a post due, or comes more than a tick late, makes no post and counts in
    /// `counters.skippedTicks`. So every tick of the driver's schedule is counted exactly once:
    /// accepted + errors + skipped = ticks planned, however slow the server, and a driver that
    /// stopped silently would show as a shortfall. Cancelling the calling task closes the
    /// connection.
    func run(start: ContinuousClock.Instant, end: ContinuousClock.Instant) async -> Int64 {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let done = loop.makePromise(of: Int64.self)
        // NIO's deadlines and Swift's clocks may count from different origins: go through "now".
        // Both from one reading, so that the number of ticks between them is exact.
        let phase = interval * Double.random(in: 0..<1)
        let (nioNow, now) = (NIODeadline.now(), ContinuousClock.now)
        let firstPost = nioNow + TimeAmount((start + phase) - now)
        let stop = nioNow + TimeAmount(end - now)
        let channel: any Channel
        do {
            channel = try await LoadConnection.connect(host: host, port: port, on: loop) { channel in
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(DriverHandler(loop: self, firstPost: firstPost, stop: stop, done: done))
            }
        } catch {
            counters.postErrors.add(Int(Self.ticks(from: firstPost, before: stop, every: TimeAmount(interval))), ordering: .relaxed)
            done.succeed(0)
            return 0
        }
        return (try? await LoadConnection.wait(for: done.futureResult, closingOnCancel: channel)) ?? 0
    }

    /// How many ticks of a schedule starting at `first` fall before `stop`.
    static func ticks(from first: NIODeadline, before stop: NIODeadline, every interval: TimeAmount) -> Int64 {
        guard first < stop else { return 0 }
        return (stop - first - .nanoseconds(1)).nanoseconds / interval.nanoseconds + 1
    }
}

/// The driver's state and its connection's handler; everything runs on the connection's loop.
private final class DriverHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let driver: DriverLoop
    private let stop: NIODeadline
    private let done: EventLoopPromise<Int64>
    private let interval: TimeAmount
    private let seconds: Double
    private let booking: String
    /// The headers every POST of this driver shares (Content-Length is added per POST).
    private let headers: HTTPHeaders
    private var track: StreetTrack
    private var next: NIODeadline
    private var number: Int64 = 0
    private var accepted: Int64 = 0
    /// When the POST in flight was written; nil when none is.
    private var inFlight: NIODeadline?
    /// Its `sim_n`, so that a timeout knows whether its POST is still the one in flight.
    private var inFlightNumber: Int64 = 0
    private var status: HTTPResponseStatus?
    /// A tick came while a POST was in flight: post as soon as its answer is in.
    private var due = false
    private var ticking = true

    init(loop: DriverLoop, firstPost: NIODeadline, stop: NIODeadline, done: EventLoopPromise<Int64>) {
        driver = loop
        self.stop = stop
        self.done = done
        interval = TimeAmount(loop.interval)
        seconds = loop.interval.secondsDouble
        booking = loop.driver.booking.map { #","booking_id":"\#($0)""# } ?? ""
        headers = ["Host": "\(loop.host):\(loop.port)", "X-API-Key": loop.driver.apiKey, "Content-Type": "application/json"]
        track = StreetTrack(seed: UInt64(loop.driver.index) &* 7_919 &+ 17)
        next = firstPost
    }

    func channelActive(context: ChannelHandlerContext) {
        schedule(context: context)
        context.fireChannelActive()
    }

    private func schedule(context: ChannelHandlerContext) {
        guard next < stop else {
            ticking = false
            finishIfIdle(context: context)
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(deadline: next) { bound.value.0.tick(context: bound.value.1) }
    }

    private func tick(context: ChannelHandlerContext) {
        guard ticking else { return }  // the connection closed
        next = next + interval
        // Far behind (the loop was busy): skip the ticks that passed rather than burst to catch up.
        let now = NIODeadline.now()
        if next < now - interval {
            let behind = DriverLoop.ticks(from: next, before: now - interval, every: interval)
            skipped(DriverLoop.ticks(from: next, before: min(stop, now - interval), every: interval))
            next = next + interval * behind
        }
        if inFlight == nil {
            post(context: context)
        } else if due {
            skipped(1)  // one post is already due after the answer; a second would be a burst
        } else {
            due = true
        }
        schedule(context: context)
    }

    private func post(context: ChannelHandlerContext) {
        number += 1
        let fix = track.advance(seconds: seconds)
        let sent = wallMicros()
        let body = ByteBuffer(string: #"{"latitude":\#(fix.latitude),"longitude":\#(fix.longitude),"timestamp":"\#(isoTimestamp(micros: sent))","speed":\#(fix.speed),"heading":\#(fix.heading)\#(booking),"attributes":{"sim_d":\#(driver.driver.index),"sim_n":\#(number),"sim_us":\#(sent)}}"#)
        var headers = headers
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api/v1/locations", headers: headers)
        inFlight = .now()
        inFlightNumber = number
        status = nil
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let posted = number
        context.eventLoop.scheduleTask(in: DriverLoop.answerTimeout) {
            let (handler, context) = bound.value
            // Unanswered: counted as failed by channelInactive once the connection is closed.
            if handler.inFlight != nil, handler.inFlightNumber == posted { context.close(promise: nil) }
        }
    }

    private func skipped(_ ticks: Int64) {
        if ticks > 0 { driver.counters.skippedTicks.add(Int(ticks), ordering: .relaxed) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = head.status
        case .body: break
        case .end:
            guard let began = inFlight else { return }
            inFlight = nil
            if status == .accepted {
                accepted += 1
                driver.counters.posts.add(1, ordering: .relaxed)
                driver.counters.positions.add(1, ordering: .relaxed)
                driver.ingestLatency.record(microseconds: (NIODeadline.now() - began).nanoseconds / 1_000)
            } else {
                driver.counters.postErrors.add(1, ordering: .relaxed)
            }
            if due {
                due = false
                post(context: context)
            } else {
                finishIfIdle(context: context)
            }
        }
    }

    private func finishIfIdle(context: ChannelHandlerContext) {
        guard !ticking, inFlight == nil else { return }
        done.succeed(accepted)
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Lost before the end: the POST in flight and the tick due behind it (two ticks) failed,
        // and so does every tick left.
        var failed: Int64 = (inFlight != nil ? 1 : 0) + (due ? 1 : 0)
        if ticking { failed += DriverLoop.ticks(from: next, before: stop, every: interval) }
        if failed > 0 { driver.counters.postErrors.add(Int(failed), ordering: .relaxed) }
        inFlight = nil
        due = false
        ticking = false
        done.succeed(accepted)  // ignored when already finished
        context.fireChannelInactive()
    }
}

extension Duration {
    var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
    var secondsDouble: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
