import PostgresNIO

extension PSQLError {
    /// The server's message (and detail/hint) rather than PSQLError's generic description,
    /// which hides them to avoid leaking data into logs by accident.
    var serverMessage: String {
        guard let info = serverInfo else { return "\(code)" }
        var text = info[.message] ?? "\(code)"
        if let detail = info[.detail] { text += " (\(detail))" }
        if let hint = info[.hint] { text += " Hint: \(hint)" }
        return text
    }

    var sqlState: String? { serverInfo?[.sqlState] }
    /// The constraint a violation names, to tell which foreign key failed.
    var constraint: String? { serverInfo?[.constraintName] }
}

/// A readable description of any error thrown by PostgresNIO.
public func describeDatabaseError(_ error: any Error) -> String {
    if let error = error as? PSQLError { return error.serverMessage }
    return "\(error)"
}
