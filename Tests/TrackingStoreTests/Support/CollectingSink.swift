import Synchronization
import TrackingCore
import TrackingStore

/// A BusEventSink that keeps everything delivered to it.
final class CollectingSink: BusEventSink {
    private let delivered = Mutex<[(topic: BusTopic, event: ChangeEvent)]>([])

    func deliver(_ events: [ChangeEvent], to topic: BusTopic) {
        delivered.withLock { $0 += events.map { (topic, $0) } }
    }

    func events(of topic: BusTopic) -> [ChangeEvent] {
        delivered.withLock { $0.filter { $0.topic == topic }.map(\.event) }
    }

    func seqs(of topic: BusTopic) -> [Int64] { events(of: topic).map(\.seq) }
}
