import Testing

// `#expect` and `#require` for conditions that contain a closure. Swift 6.3.1 miscompiled a
// closure written inside a `#require(...)` argument in a test: another closure of the same
// function, outside the macro, ran the macro's closure body instead of its own (a filter for
// text frames returned the one Close frame the macro's closure looked for). That is the
// class of closure-discriminator bugs of macro arguments (swiftlang/swift PR #74299), and it
// can make a test pass that should fail. These are plain functions: their arguments are
// ordinary code. They report less than the macros (no operand values), so the call sites
// put what matters in the comment.

/// Records an issue unless `condition` holds.
public func check(_ condition: Bool, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    if !condition { Issue.record(comment ?? "check failed", sourceLocation: sourceLocation) }
}

/// Stops the test with an issue unless `condition` holds.
public func require(_ condition: Bool, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
    guard condition else {
        Issue.record(comment ?? "requirement failed", sourceLocation: sourceLocation)
        throw RequirementFailed()
    }
}

/// The value, or an issue that stops the test when it is nil.
public func require<Value>(_ value: Value?, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> Value {
    guard let value else {
        Issue.record(comment ?? "required value was nil", sourceLocation: sourceLocation)
        throw RequirementFailed()
    }
    return value
}

/// Thrown by `require` after it recorded its issue.
public struct RequirementFailed: Error, CustomStringConvertible {
    public var description: String { "a requirement failed (see the recorded issue)" }
}
