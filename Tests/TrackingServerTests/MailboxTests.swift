import NIOCore
import Testing
import TrackingCore
@testable import TrackingServer

/// The bounded inbox of one subscriber: overflow marks it and ends its stream; nothing waits.
@Suite("FanOutHub mailbox", .timeLimit(.minutes(1)))
struct MailboxTests {
    static func delivery(_ seq: Int64) -> BusDelivery {
        BusDelivery(event: ChangeEvent(seq: seq, kind: "location_update", json: "{}"), topic: .tenant(TenantID("acme")!))
    }

    /// Reads the mailbox until its stream ends; if it does not end within 5 s, records an
    /// issue and closes it so the test cannot hang.
    static func drain(_ mailbox: Mailbox) async -> (seqs: [Int64], heartbeats: Int) {
        let watchdog = Task {
            try await Task.sleep(for: .seconds(5))
            Issue.record("the mailbox stream did not end within 5 s")
            mailbox.close()
        }
        defer { watchdog.cancel() }
        var seqs: [Int64] = []
        var heartbeats = 0
        for await signal in mailbox.signals {
            switch signal {
            case .event(let delivery): seqs.append(delivery.seq)
            case .events(let deliveries): seqs += deliveries.map(\.seq)
            case .heartbeat: heartbeats += 1
            case .recheck: Issue.record("no recheck was pushed")
            case .client: Issue.record("no client message was pushed")
            }
        }
        return (seqs, heartbeats)
    }

    @Test("more events than the capacity: overflowed, the stream ends after the buffered ones")
    func overflowEndsStream() async {
        let mailbox = Mailbox(capacity: 4)
        for seq in 1...10 { mailbox.push(Self.delivery(Int64(seq))) }
        #expect(mailbox.overflowed)
        let drained = await Self.drain(mailbox)
        #expect(drained.seqs == [1, 2, 3, 4], "the oldest events are kept, in order")
    }

    @Test("a batch counts each of its events: 3 + 2 events in a capacity of 4 overflow; what a session took frees room")
    func batchesCountEvents() async {
        let mailbox = Mailbox(capacity: 4)
        mailbox.push((1...3).map { Self.delivery(Int64($0)) })
        mailbox.push((4...5).map { Self.delivery(Int64($0)) })
        #expect(mailbox.overflowed, "5 events do not fit in 4, even as two signals")
        #expect(await Self.drain(mailbox).seqs == [1, 2, 3], "the batch that fitted is delivered whole")

        let session = Mailbox(capacity: 4)
        var iterator = session.signals.makeAsyncIterator()
        session.push((1...3).map { Self.delivery(Int64($0)) })
        let first = await iterator.next()
        guard case .events(let batch)? = first else {
            Issue.record("three events arrive as one batch: \(String(describing: first))")
            return
        }
        #expect(batch.map(\.seq) == [1, 2, 3])
        session.took(first!)
        session.push((4...7).map { Self.delivery(Int64($0)) })
        #expect(!session.overflowed, "the taken batch no longer counts")
    }

    @Test("exactly the capacity: not overflowed; heartbeats into a full mailbox do not overflow it")
    func fullButNotOverflowed() async {
        let mailbox = Mailbox(capacity: 4)
        for seq in 1...4 { mailbox.push(Self.delivery(Int64(seq))) }
        mailbox.heartbeat()
        mailbox.heartbeat()
        #expect(!mailbox.overflowed)
        mailbox.close()
        let drained = await Self.drain(mailbox)
        #expect(drained.seqs == [1, 2, 3, 4])
        #expect(drained.heartbeats == 0, "a full inbox takes no heartbeat")
        #expect(!mailbox.overflowed)
    }

    @Test("a mailbox that overflowed ignores later pushes")
    func pushesAfterOverflow() async {
        let mailbox = Mailbox(capacity: 2)
        for seq in 1...3 { mailbox.push(Self.delivery(Int64(seq))) }
        #expect(mailbox.overflowed)
        for seq in 4...6 { mailbox.push(Self.delivery(Int64(seq))) }
        let drained = await Self.drain(mailbox)
        #expect(drained.seqs == [1, 2])
    }
}
