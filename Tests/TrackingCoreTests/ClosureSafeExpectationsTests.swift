import Testing
import TrackingTestSupport

/// The closure-safe stand-ins for `#expect` / `#require` fail the way the macros do.
@Suite("closure-safe expectations")
struct ClosureSafeExpectationsTests {
    @Test("check records an issue when its condition is false, and none when it holds")
    func checkRecords() {
        let values = [1, 2, 3]
        check(values.allSatisfy { $0 > 0 }, "all positive")
        withKnownIssue("a false check is an issue") {
            check(values.contains { $0 > 3 }, "nothing above 3")
        }
    }

    @Test("require returns the value, and stops with an issue on nil or false")
    func requireStops() throws {
        let values = [1, 2, 3]
        let found = try require(values.first { $0 > 1 })
        #expect(found == 2)
        withKnownIssue("nil stops the test") {
            _ = try require(values.first { $0 > 3 }, "nothing above 3")
        }
        withKnownIssue("false stops the test") {
            try require(values.isEmpty, "not empty")
        }
    }
}
