import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing
@testable import TrackingServer
import TrackingCore

/// `WebSocketLane`'s hand-overs, step by step on an embedded event loop, where the order of
/// queued jobs is the test's to choose: the lane writes only while the session's task is
/// parked and its writes have reached the channel; everything else goes to the task.
@Suite("WebSocket lane hand-overs", .timeLimit(.minutes(1)))
struct WebSocketLaneHandOverTests {
    /// A lane whose state is the last seq it wrote, and a mailbox feeding it.
    struct Fixture {
        let channel = EmbeddedChannel()
        let lane: WebSocketLane<Int64>
        let mailbox: Mailbox

        let closeSent = CloseFrameWatch.Flag()

        init(capacity: Int = 4) {
            let lane = WebSocketLane<Int64>(channel: channel, closeSent: closeSent) { signal, last in
                guard case .event(let delivery) = signal else { return nil }
                last = delivery.seq
                return [WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "\(delivery.seq)"))]
            }
            self.lane = lane
            mailbox = Mailbox(capacity: capacity, transport: .websocket, consumer: lane)
        }

        func push(_ seq: Int64) {
            let event = ChangeEvent(seq: seq, kind: "location_update", json: #"{"seq":\#(seq)}"#)
            mailbox.push(.event(BusDelivery(event: event, topic: .tenant(TenantID("acme")!), sse: false, websocket: true)))
        }

        /// What the task writes: through the event loop, as its outbound writer does.
        func taskWrites(_ text: String) {
            channel.eventLoop.execute {
                self.channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)), promise: nil)
            }
        }

        func run() { channel.embeddedEventLoop.run() }

        /// The frames written so far, as text.
        func written() throws -> [String] {
            var texts: [String] = []
            while let frame = try channel.readOutbound(as: WebSocketFrame.self) { texts.append(String(buffer: frame.data)) }
            return texts
        }
    }

    @Test("while the task is parked the lane writes each event, advances the state and frees the mailbox's bound")
    func writesWhileParked() throws {
        let fixture = Fixture(capacity: 4)
        #expect(fixture.lane.park(0))
        fixture.run()
        for seq in 1...10 {
            fixture.push(Int64(seq))
            fixture.run()
        }
        #expect(try fixture.written() == (1...10).map(String.init))
        #expect(!fixture.mailbox.overflowed, "10 events through a mailbox of 4: each is taken once written")
        #expect(fixture.lane.takeBack() == 10)
    }

    @Test("an event queued before the task's last write is handed to the task, not written ahead of that write")
    func neverOvertakesTheTask() throws {
        let fixture = Fixture()
        // The task holds the state: event 1 goes to it.
        fixture.push(1)
        fixture.run()
        fixture.lane.took()
        // Event 2 is queued on the loop before the task's write of event 1 gets there; the task
        // has parked by the time the loop runs them.
        fixture.push(2)
        fixture.taskWrites("1")
        #expect(fixture.lane.park(0))
        fixture.run()
        #expect(try fixture.written() == ["1"], "event 2 waits for the task, behind event 1")
        #expect(fixture.lane.takeBack() == 0, "the task gets the state back, unchanged")
        fixture.lane.took()
        // Once the task's writes are out, the lane writes again.
        fixture.taskWrites("2")
        #expect(fixture.lane.park(2))
        fixture.push(3)
        fixture.run()
        #expect(try fixture.written() == ["2", "3"])
    }

    @Test("the task keeps the state while signals wait for it; a socket that cannot take more hands events to the task")
    func handsBack() throws {
        let fixture = Fixture()
        #expect(fixture.lane.park(0))
        fixture.run()
        fixture.mailbox.push(.client(#"{"action":"ping"}"#))
        fixture.run()
        #expect(fixture.lane.takeBack() == 0)
        fixture.push(1)
        fixture.run()
        #expect(!fixture.lane.park(0), "a signal is queued for the task: it may not park")
        fixture.lane.took()
        fixture.lane.took()
        #expect(fixture.lane.park(0))
        fixture.run()
        fixture.channel.isWritable = false
        fixture.push(2)
        fixture.run()
        #expect(try fixture.written().isEmpty, "nothing is written past a full socket")
        #expect(fixture.lane.takeBack() == 0)
    }
}

extension WebSocketLaneHandOverTests {
    @Test("a parking's job that runs after a later parking does not let the lane overtake the task's writes before that one")
    func staleParkingJob() throws {
        let fixture = Fixture()
        // Loop order made here: the ping's hand-over, then the task's steps (job X), then the
        // first parking's job, which thereby runs after the second parking.
        fixture.mailbox.push(.client(#"{"action":"ping"}"#))
        fixture.channel.eventLoop.execute {
            _ = fixture.lane.takeBack()
            fixture.lane.took()
            fixture.push(2)          // queued before the task's write of 1
            fixture.taskWrites("1")
            #expect(fixture.lane.park(0))
        }
        #expect(fixture.lane.park(0))
        fixture.run()
        #expect(try fixture.written() == ["1"], "event 2 goes to the task, behind its write of 1")
        #expect(fixture.lane.takeBack() == 0)
    }

    @Test("a mailbox closed while the task is parked: the task's signals end and it gets its state back")
    func closedWhileParked() async throws {
        let fixture = Fixture()
        #expect(fixture.lane.park(7))
        fixture.run()
        fixture.mailbox.close()
        fixture.push(8)
        fixture.run()
        #expect(try fixture.written().isEmpty, "nothing is written after the close")
        #expect(fixture.lane.takeBack() == 7)
        var signals = fixture.lane.signals.makeAsyncIterator()
        let next = await signals.next()
        #expect(next == nil, "the task's wait ends")
    }
}

extension WebSocketLaneHandOverTests {
    @Test("once a Close frame is out the lane writes nothing more: events go to the task")
    func afterClose() throws {
        let fixture = Fixture()
        #expect(fixture.lane.park(0))
        fixture.run()
        fixture.push(1)
        fixture.run()
        fixture.closeSent.raise()
        fixture.push(2)
        fixture.run()
        #expect(try fixture.written() == ["1"])
        #expect(fixture.lane.takeBack() == 1, "event 2 went to the task with the state")
    }

    @Test("the close watch passes frames until a Close frame, which raises its flag, and drops every frame after it")
    func closeWatch() throws {
        let channel = EmbeddedChannel()
        let flag = CloseFrameWatch.Flag()
        try channel.pipeline.syncOperations.addHandler(CloseFrameWatch(sent: flag))
        let text = { (t: String) in WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: t)) }
        try channel.writeAndFlush(text("before")).wait()
        #expect(!flag.isRaised)
        var closing = ByteBuffer()
        closing.write(webSocketErrorCode: .goingAway)
        try channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: closing)).wait()
        #expect(flag.isRaised)
        #expect(throws: ChannelError.self) { try channel.writeAndFlush(text("after")).wait() }
        var opcodes: [WebSocketOpcode] = []
        while let frame = try channel.readOutbound(as: WebSocketFrame.self) { opcodes.append(frame.opcode) }
        #expect(opcodes == [.text, .connectionClose], "nothing after the Close frame")
    }
}
