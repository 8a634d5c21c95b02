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
