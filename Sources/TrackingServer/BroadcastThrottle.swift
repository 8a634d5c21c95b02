import Foundation
import TrackingCore

/// Per-device broadcast throttle with latest-wins coalescing: of a device's `location_update`s
/// on one topic, at most one is pushed per interval. The first goes at once; later ones within
/// the interval are held, each replacing the one before, and the newest is pushed when the
/// interval has passed, so the last point of a burst is never dropped. Storage is untouched:
/// every fix is in the database and in the change log for replays.
///
/// Any other event of a device (removed, purged, status) first releases the device's held
/// update, so a device's events still reach subscribers in order.
struct BroadcastThrottle {
    struct Key: Hashable {
        let topic: BusTopic
        let device: UUID
    }

    struct Slot {
        var lastSent: ContinuousClock.Instant
        var held: ChangeEvent?
    }

    /// What to push, in order; `coalesced` marks a held update released late.
    struct Release {
        let event: ChangeEvent
        let coalesced: Bool
    }

    let interval: Duration
    private(set) var slots: [Key: Slot] = [:]

    init(interval: Duration) {
        self.interval = interval
    }

    /// Offers the events of one topic as they arrive; returns what to push now.
    mutating func offer(_ events: [ChangeEvent], topic: BusTopic, now: ContinuousClock.Instant) -> [Release] {
        var releases: [Release] = []
        releases.reserveCapacity(events.count)
        for event in events {
            guard let device = event.audience?.device else {
                releases.append(Release(event: event, coalesced: false))
                continue
            }
            let key = Key(topic: topic, device: device)
            guard event.kind == "location_update" else {
                if let held = slots[key]?.held {
                    releases.append(Release(event: held, coalesced: true))
                    slots[key]?.held = nil
                }
                releases.append(Release(event: event, coalesced: false))
                continue
            }
            if let slot = slots[key], now - slot.lastSent < interval {
                // A fix that does not move the marker ("latest": false: filtered, or older than
                // the marker) never displaces the held one that does; within the interval it is
                // coalesced away like any intermediate update (it stays in the log for replays).
                if slot.held == nil || Self.movesMarker(event) { slots[key]?.held = event }
            } else {
                slots[key] = Slot(lastSent: now, held: nil)
                releases.append(Release(event: event, coalesced: false))
            }
        }
        return releases
    }

    /// Whether a location_update says it moves the marker (`"latest": true`). Parsed only for
    /// updates that arrive within the interval, so the unthrottled path never pays for it.
    static func movesMarker(_ event: ChangeEvent) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: Data(event.json.utf8)) as? [String: Any] else { return true }
        return object["latest"] as? Bool ?? true
    }

    /// Held updates whose interval has passed, released now; idle slots are forgotten.
    mutating func due(now: ContinuousClock.Instant) -> [(topic: BusTopic, release: Release)] {
        var releases: [(topic: BusTopic, release: Release)] = []
        for (key, slot) in slots where now - slot.lastSent >= interval {
            if let held = slot.held {
                releases.append((key.topic, Release(event: held, coalesced: true)))
                slots[key] = Slot(lastSent: now, held: nil)
            } else {
                slots[key] = nil
            }
        }
        // Per topic in seq order, so subscribers see them as the log has them.
        return releases.sorted { $0.release.event.seq < $1.release.event.seq }
    }
}
