import Foundation
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import TrackingCore
import TrackingStore

/// One WebSocket: rooms joined and left by client messages, all fed from one mailbox in the
/// shared hub (the same fan-out as SSE), each room opened like an SSE stream (snapshot, or
/// replay with `resume`), de-duplicated by seq and filtered by what the viewer may see.
///
/// Client → server: `{"action":"join","room":"tenant:<id>"|"booking:<id>"|"device:<id>"|"driver:<id>"|"route:<id>"|"admin:<id>"}`,
/// `{"action":"resume","room":…,"since":<seq>}`, `{"action":"leave","room":…}`,
/// `{"action":"active_drivers","minutes":<1–1440, default 5>}`, `{"action":"ping"}`. Server → client: every message is an object with `type` and, for
/// room traffic, `room`: `joined`, `left`, `snapshot`/`reset`, the events (`location_update`,
/// `status`, …, each with `seq`), `add`/`remove` on scope changes, `pong`, `error`.
///
/// The session's task writes everything but the live events it leaves to `WebSocketLane` while it
/// waits; the reader task only queues client messages into the mailbox.
/// A client too slow for its mailbox is told so and disconnected (close code 1013); it
/// reconnects and resumes each room from the last seq it has.
struct WebSocketSession: Sendable {
    struct Settings: Sendable {
        /// Rooms one socket may hold.
        var maxRooms = 50
        /// A socket in no room for this long is closed.
        var idleTimeout: Duration = .seconds(60)
        /// Largest client message accepted.
        var maxMessageBytes = 16 << 10
        /// Largest frame written as is; larger messages are split into continuation frames.
        var maxFrameBytes = 1 << 14

        init() {}
    }

    let admission: WebSocketAdmission
    let hub: FanOutHub
    let repository: TrackingRepository
    let authenticator: Authenticator
    let snapshots: SnapshotCoalescer
    let settings: Settings
    let logger: Logger

    struct Room {
        let name: String
        let topic: BusTopic
        /// Set for device, driver and route rooms: the tenant topic narrowed to one device (a
        /// driver's room is their device's) or to one fleet route.
        let narrowing: StreamFilter?
        var progress: StreamProgress

        func filter(for viewer: StreamFilter) -> StreamFilter {
            narrowing.map { .both(viewer, $0) } ?? viewer
        }
    }

    struct State: Sendable {
        var viewer: StreamViewer
        var rooms: [String: Room] = [:]
        var subscriptions: [BusTopic: Subscription] = [:]
        var lastActivity = ContinuousClock.now
    }

    enum Ending: Error {
        case closed(WebSocketErrorCode, String)
    }

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel) async throws {
        let closeSent = await CloseFrameWatch.install(on: channel)
        let lane = WebSocketLane<State>(channel: channel, closeSent: closeSent) { signal, state in
            self.liveFrames(for: signal, state: &state)
        }
        let mailbox = hub.makeMailbox(transport: .websocket, consumer: lane)
        // The reader also answers pings and collects pongs (WSCore does that while iterating),
        // so it runs for the whole life of the socket. When the client goes, the loop ends.
        let maxMessage = settings.maxMessageBytes
        let reader = Task {
            defer { mailbox.close() }
            var messages = inbound.messages(maxSize: maxMessage).makeAsyncIterator()
            while let message = try? await messages.next() {
                switch message {
                case .text(let text): mailbox.push(.client(text))
                case .binary: mailbox.push(.client(""))
                }
            }
        }
        let idle = settings.idleTimeout
        let watchdog = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: idle / 2)
                mailbox.heartbeat()
            }
        }
        var userSubscription: Subscription?
        var state: State?
        do {
            if case .user(let user) = admission.principal {
                userSubscription = try await hub.subscribe(topics: [.user(user.tenant, user.id)], into: mailbox)
            }
            state = State(viewer: try await authenticator.currentViewer(admission.principal))
            try await serve(mailbox, lane: lane, state: &state!, outbound: outbound)
        } catch Ending.closed(let code, let reason) {
            try? await outbound.close(code, reason: reason)
        } catch let error as APIError {
            try? await send(Self.errorMessage(error.message, code: error.code), outbound)
            try? await outbound.close(.policyViolation, reason: error.code)
        } catch let error as NIOAsyncWriterError where error == .alreadyFinished() {
            // The client went away while something was being sent to it: an ordinary end.
            logger.debug("websocket client gone while sending")
        } catch {
            // Anything else (the database, a failed write) ends this socket only. It must not
            // escape: the reader would still hold the inbound stream that WSCore then reads for
            // the closing handshake, and two readers of one stream abort the process.
            logger.warning("websocket session failed: \(describeDatabaseError(error))")
            try? await send(Self.errorMessage("The server could not continue this socket; reconnect and resume.", code: "internal"), outbound)
            try? await outbound.close(.unexpectedServerError, reason: "internal")
        }
        reader.cancel()
        watchdog.cancel()
        _ = await reader.result
        for subscription in state?.subscriptions.values.map({ $0 }) ?? [] { await subscription.cancel() }
        await userSubscription?.cancel()
        mailbox.close()
    }

    private func serve(_ mailbox: Mailbox, lane: WebSocketLane<State>, state: inout State, outbound: WebSocketOutboundWriter) async throws {
        if let trip = admission.trip {
            try await Task.sleep(for: WebSocketRoutes.firstFrameDelay)  // the server speaks first here
            try await openTripRoom(trip, mailbox: mailbox, state: &state, outbound: outbound)
        }
        var signals = lane.signals.makeAsyncIterator()
        while true {
            // With nothing queued, the lane holds the state and writes live events itself
            // until a signal needs this task.
            let parked = lane.park(state)
            let next = await signals.next()
            if parked { state = lane.takeBack() }
            guard let signal = next else { break }
            lane.took()
            if mailbox.overflowed { break }
            mailbox.took(signal)
            switch signal {
            case .event(let delivery):
                try await deliver(delivery, state: &state, outbound: outbound)
            case .events(let deliveries):
                for delivery in deliveries { try await deliver(delivery, state: &state, outbound: outbound) }
            case .heartbeat:
                if state.rooms.isEmpty, ContinuousClock.now - state.lastActivity > settings.idleTimeout {
                    try await send(Self.errorMessage("No room joined for \(settings.idleTimeout); closing.", code: "idle"), outbound)
                    throw Ending.closed(.normalClosure, "idle")
                }
            case .recheck:
                try await recheckScope(state: &state, outbound: outbound)
            case .client(let text):
                state.lastActivity = .now
                try await handle(text, mailbox: mailbox, state: &state, outbound: outbound)
            }
        }
        if mailbox.overflowed {
            logger.info("websocket client fell behind; disconnecting", metadata: ["rooms": "\(state.rooms.count)"])
            try? await send(Self.errorMessage("You fell too far behind; reconnect and resume each room from the last seq you have.",
                                              code: "slow_consumer"), outbound)
            throw Ending.closed(.unknown(1013), "slow_consumer")
        }
    }

    // MARK: Rooms

    /// `/ws/tracking/{id}`: the trip's room, then its current status; a trip that has already
    /// ended closes the socket after that status.
    private func openTripRoom(_ trip: TripRecord, mailbox: Mailbox, state: inout State, outbound: WebSocketOutboundWriter) async throws {
        let room = BusTopic.booking(admission.principal.tenant, trip.booking).roomName
        try await join(room, since: admission.since, mailbox: mailbox, state: &state, outbound: outbound)
        // Read after the room is live, so a status change from here on arrives as an event.
        guard let current = try await repository.trip(trip.booking, tenant: admission.principal.tenant) else {
            throw APIError.notFound("No trip for booking \(trip.booking).")
        }
        try await send(RoomMessage.tagged(#"{"type":"status","current":true,"# + current.json.dropFirst(), room: room), outbound)
        if current.status == "completed" || current.status == "cancelled" {
            throw Ending.closed(.normalClosure, "trip \(current.status)")
        }
    }

    private func handle(_ text: String, mailbox: Mailbox, state: inout State, outbound: WebSocketOutboundWriter) async throws {
        guard let command = ClientCommand.parse(text) else {
            try await send(Self.errorMessage(#"Send a JSON object such as {"action":"join","room":"tenant:<id>"}."#, code: "bad_message"), outbound)
            return
        }
        do {
            switch command.action {
            case "join":
                try await join(try command.requireRoom(), since: nil, mailbox: mailbox, state: &state, outbound: outbound)
            case "resume":
                let room = try command.requireRoom()
                guard let since = command.since else { throw RoomError(room: room, message: "resume needs \"since\": the last seq you have") }
                if state.rooms[room] != nil { await leave(room, state: &state) }
                try await join(room, since: since, mailbox: mailbox, state: &state, outbound: outbound)
            case "leave":
                let room = try command.requireRoom()
                guard state.rooms[room] != nil else { throw RoomError(room: room, message: "not joined") }
                await leave(room, state: &state)
                try await send(#"{"type":"left","room":"\#(room)"}"#, outbound)
            case "ping":
                try await send(#"{"type":"pong"}"#, outbound)
            case "active_drivers":
                try await sendActiveDrivers(minutes: command.minutes, viewer: state.viewer.filter, outbound: outbound)
            default:
                try await send(Self.errorMessage("Unknown action \"\(command.action.prefix(40))\"; use join, resume, leave, active_drivers or ping.",
                                                 code: "bad_message"), outbound)
            }
        } catch let error as RoomError {
            try await send(Self.errorMessage(error.message, code: "room_error", room: error.room), outbound)
        }
    }

    private func join(_ name: String, since: String?, mailbox: Mailbox, state: inout State, outbound: WebSocketOutboundWriter) async throws {
        if let joined = state.rooms[name], since == nil {
            try await send(#"{"type":"joined","room":"\#(name)","seq":\#(joined.progress.lastSent),"already":true}"#, outbound)
            return
        }
        guard state.rooms.count < settings.maxRooms else {
            throw RoomError(room: name, message: "a socket holds at most \(settings.maxRooms) rooms; leave one first")
        }
        let (topic, narrowing, opening) = try await resolve(name, viewer: state.viewer.filter)
        if state.subscriptions[topic] == nil {
            state.subscriptions[topic] = try await hub.subscribe(topics: [topic], into: mailbox)
        }
        let liveSince = ContinuousClock.now
        var room = Room(name: name, topic: topic, narrowing: narrowing, progress: StreamProgress(filter: .nothing))
        let filter = room.filter(for: state.viewer.filter)
        do {
            guard let bounds = try await repository.logBounds(tenant: topic.tenant) else { throw RoomError(room: name, message: "unknown room") }
            let start = since.map { StreamStart.decide(requested: $0, bounds: bounds) } ?? .snapshot
            try await send(#"{"type":"joined","room":"\#(name)"}"#, outbound)
            let feed = StreamFeed(topic: topic, repository: repository, snapshots: snapshots)
            // A snapshot may be narrowed differently from the events (a route room's is its
            // driver's position); a replay is the room's own events.
            var openingFilter = filter
            if let opening {
                if case .replay = start {} else { openingFilter = .both(state.viewer.filter, opening) }
            }
            let opened = try await feed.open(start, filter: openingFilter, liveSince: liveSince) { _, _, json in
                try await send(RoomMessage.tagged(json, room: name), outbound)
            }
            room.progress = StreamProgress(filter: filter, openedAt: opened)
        } catch {
            await releaseIfUnused(topic, state: &state)
            throw error
        }
        state.rooms[name] = room
    }

    private func leave(_ name: String, state: inout State) async {
        guard let room = state.rooms.removeValue(forKey: name) else { return }
        await releaseIfUnused(room.topic, state: &state)
    }

    /// Stops listening to a topic no room uses any more; its queued events are then ignored.
    private func releaseIfUnused(_ topic: BusTopic, state: inout State) async {
        guard !state.rooms.values.contains(where: { $0.topic == topic }),
              let subscription = state.subscriptions.removeValue(forKey: topic) else { return }
        await subscription.cancel()
    }

    /// A room name as a topic the caller may join. Every refusal reads the same, so a room of
    /// another tenant cannot be told from one that does not exist.
    /// Returns the topic, how the room narrows it (nil: not at all), and how its opening
    /// snapshot does when that differs (a route room's snapshot is its driver's position while
    /// the route is in progress, as positions belong to devices, not routes).
    private func resolve(_ name: String, viewer: StreamFilter) async throws -> (BusTopic, StreamFilter?, opening: StreamFilter?) {
        let tenant = admission.principal.tenant
        let refused = RoomError(room: name, message: "unknown room or not allowed; rooms are tenant:<id>, booking:<id>, device:<id>, driver:<id>, route:<id> and (admins) admin:<id>")
        guard let colon = name.firstIndex(of: ":") else { throw refused }
        let kind = name[..<colon]
        let id = String(name[name.index(after: colon)...])
        switch kind {
        case "tenant":
            guard id == tenant.rawValue else { throw refused }
            return (.tenant(tenant), nil, nil)
        case "booking":
            guard let booking = BookingID(id) else { throw refused }
            return (.booking(tenant, booking), nil, nil)
        case "admin":
            // Admin events (cdc_lag) are for the tenant's admins; the role is checked at join.
            guard id == tenant.rawValue, case .user(let user) = admission.principal, user.role == .admin else { throw refused }
            return (.admin(tenant), nil, nil)
        case "device":
            guard let device = UUID(uuidString: id), id == id.lowercased(),
                  let record = try await repository.device(device, tenant: tenant), viewer.allows(record.audience)
            else { throw refused }
            return (.tenant(tenant), .device(device), nil)
        case "driver", "route":
            // Fleet rooms narrow the tenant stream (see SQL/100_fleet.sql): a driver's room is
            // their device's events (fixes and visit updates); a route's, the events logged with
            // that route. Users only; a driver-role user only their own.
            guard let fleetID = UUID(uuidString: id), case .user(let user) = admission.principal else { throw refused }
            let record = kind == "driver" ? try await repository.driver(fleetID, tenant: tenant)
                                          : try await repository.route(fleetID, tenant: tenant)
            guard let record, FleetRoutes.canSee(record.audience, user) else { throw refused }
            if kind == "route" {
                let driving = record.status == "in_progress" ? record.audience?.device : nil
                return (.tenant(tenant), .route(fleetID), driving.map { .device($0) } ?? .nothing)
            }
            guard let device = record.audience?.device else {
                throw RoomError(room: name, message: "driver \(id) has no device, so no events")
            }
            return (.tenant(tenant), .device(device), nil)
        default:
            throw refused
        }
    }

    // MARK: Live

    private func deliver(_ delivery: BusDelivery, state: inout State, outbound: WebSocketOutboundWriter) async throws {
        var tripEnded = false
        for (name, message) in messages(for: delivery, state: &state) {
            try await sendFrame(message, outbound)
            if let trip = admission.trip, delivery.kind == "status", name == delivery.topic.roomName,
               delivery.topic.booking == trip.booking, Self.isFinalStatus(delivery.json) {
                tripEnded = true
            }
        }
        if tripEnded { throw Ending.closed(.normalClosure, "trip ended") }
    }

    /// The message each room that takes `delivery` gets, in room order; advances the rooms.
    private func messages(for delivery: BusDelivery, state: inout State) -> [(room: String, message: ByteBuffer)] {
        var messages: [(room: String, message: ByteBuffer)] = []
        for name in state.rooms.keys where state.rooms[name]?.topic == delivery.topic {
            guard state.rooms[name]!.progress.shouldSend(delivery) else { continue }
            if state.rooms[name]!.narrowing == nil, let message = delivery.message {
                messages.append((name, message))
            } else {
                messages.append((name, ByteBuffer(string: RoomMessage.tagged(delivery.json, room: name))))
            }
        }
        return messages
    }

    /// The frames `signal` makes on this socket, for `WebSocketLane` to write while the task
    /// waits; nil when the task must handle it: anything but events, and a status event on a
    /// trip's socket (it may end the socket). It decides nil before it changes `state`: the
    /// lane hands the state back as it is, and a room advanced past an unsent event would skip it.
    func liveFrames(for signal: SessionSignal, state: inout State) -> [WebSocketFrame]? {
        let deliveries: [BusDelivery]
        switch signal {
        case .event(let delivery): deliveries = [delivery]
        case .events(let batch): deliveries = batch
        case .heartbeat, .recheck, .client: return nil
        }
        if admission.trip != nil, deliveries.contains(where: { $0.kind == "status" }) { return nil }
        var frames: [WebSocketFrame] = []
        for delivery in deliveries {
            for (_, message) in messages(for: delivery, state: &state) {
                Self.appendFrames(of: message, maxFrameBytes: settings.maxFrameBytes, to: &frames)
            }
        }
        return frames
    }

    /// One text message as frames of at most `maxFrameBytes` (as WSCore's writer splits them).
    static func appendFrames(of message: ByteBuffer, maxFrameBytes: Int, to frames: inout [WebSocketFrame]) {
        var rest = message
        var opcode = WebSocketOpcode.text
        while rest.readableBytes > maxFrameBytes, let slice = rest.readSlice(length: maxFrameBytes) {
            frames.append(WebSocketFrame(fin: false, opcode: opcode, data: slice))
            opcode = .continuation
        }
        frames.append(WebSocketFrame(fin: true, opcode: opcode, data: rest))
    }

    /// The viewer's scope may have changed: re-read it; rooms get `remove` / `add` for the difference.
    private func recheckScope(state: inout State, outbound: WebSocketOutboundWriter) async throws {
        guard let user = state.viewer.user else { return }
        guard let record = try await repository.user(user, tenant: admission.principal.tenant) else {
            try await send(#"{"type":"closed","reason":"user_deleted"}"#, outbound)
            throw Ending.closed(.policyViolation, "user deleted")
        }
        let old = state.viewer.filter
        let new = StreamFilter.forUser(role: record.role, scope: record.scope, device: record.deviceID)
        guard new != old else { return }
        state.viewer.filter = new
        for name in state.rooms.keys.sorted() {
            guard let room = state.rooms[name] else { continue }
            let feed = StreamFeed(topic: room.topic, repository: repository, snapshots: snapshots)
            let change = try await feed.scopeChange(from: room.filter(for: old), to: room.filter(for: new)) { _, _, json in
                try await send(RoomMessage.tagged(json, room: name), outbound)
            }
            state.rooms[name]!.progress.changeFilter(to: room.filter(for: new), asOf: change.seq, added: change.added)
        }
    }

    /// Drivers with a fix in the last `minutes` and their latest position, as the viewer may see them.
    private func sendActiveDrivers(minutes: Int?, viewer: StreamFilter, outbound: WebSocketOutboundWriter) async throws {
        let minutes = minutes ?? 5
        guard (1...1_440).contains(minutes) else {
            throw RoomError(room: nil, message: "\"minutes\" must be 1–1440")
        }
        guard case .user(let user) = admission.principal else {
            throw RoomError(room: nil, message: "active_drivers is for signed-in users")
        }
        let drivers = try await repository.activeDrivers(tenant: user.tenant, minutes: minutes)
            .filter { FleetRoutes.canSee($0.audience, user) && viewer.allows($0.audience) }
        try await send(#"{"type":"active_drivers","minutes":\#(minutes),"drivers":[\#(drivers.map(\.json).joined(separator: ","))]}"#, outbound)
    }

    // MARK: Writing

    private func send(_ text: String, _ outbound: WebSocketOutboundWriter) async throws {
        try await outbound.writeTextMessage(text)
    }

    /// A message framed once by the hub for every socket in the room.
    private func sendFrame(_ buffer: ByteBuffer, _ outbound: WebSocketOutboundWriter) async throws {
        if buffer.readableBytes <= settings.maxFrameBytes {
            try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: buffer)))
        } else {
            try await outbound.writeTextMessage(String(buffer: buffer))
        }
    }

    static func errorMessage(_ message: String, code: String, room: String? = nil, status: Int? = nil) -> String {
        var object: [String: Any] = ["type": "error", "code": code, "message": message]
        if let room { object["room"] = room }
        if let status { object["status"] = status }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data(#"{"type":"error"}"#.utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// Whether a `status` event's JSON (jsonb text) says the trip ended.
    static func isFinalStatus(_ json: String) -> Bool {
        json.contains(#""status": "completed""#) || json.contains(#""status": "cancelled""#)
    }
}

/// A refused room action, answered with an `error` message; the socket stays open.
struct RoomError: Error {
    let room: String?
    let message: String
}

/// A message from a WebSocket client.
struct ClientCommand {
    let action: String
    let room: String?
    /// The seq to resume after, as given (a number or a numeric string).
    let since: String?
    /// For active_drivers: how far back a fix counts.
    var minutes: Int? = nil

    static func parse(_ text: String) -> ClientCommand? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let action = object["action"] as? String
        else { return nil }
        let since: String? = switch object["since"] {
        case let number as NSNumber: number.stringValue
        case let text as String: text
        default: nil
        }
        return ClientCommand(action: action, room: object["room"] as? String, since: since,
                             minutes: (object["minutes"] as? NSNumber).map { $0.intValue })
    }

    func requireRoom() throws -> String {
        guard let room, !room.isEmpty, room.utf8.count <= 80 else {
            throw RoomError(room: nil, message: "\"room\" is required: tenant:<id>, booking:<id>, device:<id>, driver:<id> or route:<id>")
        }
        return room
    }
}
