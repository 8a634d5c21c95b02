import Testing
import TrackingCore

@Suite("TenantID, BookingID and BusTopic")
struct IdentifierTests {
    @Test("tenant ids: lowercase letters, digits, '_' and '-', 1–40 bytes, not starting with '_' or '-'", arguments: [
        "acme", "a", "0fleet", "acme-north_2", String(repeating: "t", count: 40),
    ])
    func validTenants(text: String) {
        #expect(TenantID(text)?.rawValue == text)
    }

    @Test("tenant ids that could break a channel name or exceed the rule are refused", arguments: [
        "", String(repeating: "t", count: 41), "Acme", "_acme", "-acme", "ac.me", "ac me", "acmé", "a\"b", "a;b", "a\nb",
    ])
    func invalidTenants(text: String) {
        #expect(TenantID(text) == nil)
    }

    @Test("booking ids: letters of both cases, digits, '.', '_', ':' and '-', 1–40 bytes", arguments: [
        "B-1", "order.2026:17_x", "_leading", "-x", String(repeating: "B", count: 40),
    ])
    func validBookings(text: String) {
        #expect(BookingID(text)?.rawValue == text)
    }

    @Test("booking ids with other characters or the wrong length are refused", arguments: [
        "", String(repeating: "B", count: 41), "a b", "a/b", "a\"b", "a'b", "ü", "a,b", "a$b",
    ])
    func invalidBookings(text: String) {
        #expect(BookingID(text) == nil)
    }

    @Test("topics name their channel, tenant and booking")
    func topics() throws {
        let tenant = try #require(TenantID("acme"))
        let booking = try #require(BookingID("B-7"))
        #expect(BusTopic.tenant(tenant).channel == "pgtrack.tenant.acme")
        #expect(BusTopic.booking(tenant, booking).channel == "pgtrack.booking.B-7")
        #expect(BusTopic.tenant(tenant).booking == nil)
        #expect(BusTopic.booking(tenant, booking).booking == booking)
        #expect(BusTopic.booking(tenant, booking).tenant == tenant)
        #expect(BusTopic.tenant(tenant) != BusTopic.booking(tenant, booking))
    }

    @Test("the longest ids still give channel names within PostgreSQL's 63-byte limit")
    func channelLength() throws {
        let tenant = try #require(TenantID(String(repeating: "t", count: 40)))
        let booking = try #require(BookingID(String(repeating: "B", count: 40)))
        #expect(BusTopic.tenant(tenant).channel.utf8.count <= 63)
        #expect(BusTopic.booking(tenant, booking).channel.utf8.count <= 63)
    }
}
