import Foundation

/// A plausible street-like track: a vehicle drives along a Manhattan grid of streets (blocks of
/// ~120 m), at a speed that varies around a cruise speed, turning or going straight at each
/// intersection and slowing for turns. Deterministic for a seed.
public struct StreetTrack: Sendable {
    public struct Fix: Sendable {
        public var latitude: Double
        public var longitude: Double
        public var speed: Double
        public var heading: Double
    }

    private var rng: SplitMix
    private let origin: (lat: Double, lon: Double)
    /// Position in metres east/north of the origin.
    private var x: Double
    private var y: Double
    /// 0 north, 1 east, 2 south, 3 west.
    private var direction: Int
    private var speed: Double
    private let cruise: Double
    private let block = 120.0

    public init(seed: UInt64, center: (lat: Double, lon: Double) = (52.52, 13.405)) {
        rng = SplitMix(seed: seed)
        origin = center
        // Start on a random intersection within ~3 km of the centre, on a street.
        x = Double(Int(rng.next() % 50) - 25) * 120
        y = Double(Int(rng.next() % 50) - 25) * 120
        direction = Int(rng.next() % 4)
        cruise = 7 + Double(rng.next() % 700) / 100  // 7–14 m/s
        speed = cruise
    }

    /// Advances `seconds` and returns the new fix.
    public mutating func advance(seconds: Double) -> Fix {
        var remaining = speed * seconds
        while remaining > 0 {
            let along = direction % 2 == 0 ? y : x
            let sign: Double = direction < 2 ? 1 : -1
            // Distance to the next intersection in the direction of travel.
            let offset = along.truncatingRemainder(dividingBy: block)
            var toNext = sign > 0 ? block - (offset < 0 ? offset + block : offset) : (offset > 0 ? offset : offset + block)
            if toNext < 0.01 { toNext = block }
            let step = min(remaining, toNext)
            switch direction {
            case 0: y += step
            case 1: x += step
            case 2: y -= step
            default: x -= step
            }
            remaining -= step
            if step == toNext {
                // At an intersection: straight on (60 %), left or right; never a U-turn.
                let roll = rng.next() % 10
                if roll >= 8 { direction = (direction + 1) % 4; speed = cruise * 0.5 }
                else if roll >= 6 { direction = (direction + 3) % 4; speed = cruise * 0.5 }
            }
        }
        // Accelerate back to cruise with some jitter.
        speed = min(cruise * 1.15, max(1, speed + (cruise - speed) * 0.5 + (Double(rng.next() % 200) / 100 - 1)))
        let lat = origin.lat + y / 111_320
        let lon = origin.lon + x / (111_320 * cos(origin.lat * .pi / 180))
        return Fix(latitude: (lat * 1e7).rounded() / 1e7, longitude: (lon * 1e7).rounded() / 1e7,
                   speed: (speed * 10).rounded() / 10, heading: Double(direction) * 90)
    }
}

struct SplitMix: Sendable {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
