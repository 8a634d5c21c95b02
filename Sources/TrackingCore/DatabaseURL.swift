/// A `postgres://user:password@host:port/database?sslmode=…` URL, as in `DATABASE_URL`.
/// A `host=/path` query item (or a percent-encoded path as host) selects a Unix socket.
public struct DatabaseURL: Sendable, Equatable {
    public enum SSLMode: String, Sendable { case disable, prefer, require }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    public var unixSocketDirectory: String?

    public init(host: String = "127.0.0.1", port: Int = 5432, username: String, password: String? = nil,
                database: String, sslMode: SSLMode = .disable, unixSocketDirectory: String? = nil) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.unixSocketDirectory = unixSocketDirectory
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(parsing text: String) throws(ParseError) {
        guard let schemeEnd = text.range(of: "://") else {
            throw ParseError(description: "DATABASE_URL must look like postgres://user:password@host:5432/database")
        }
        let scheme = text[..<schemeEnd.lowerBound]
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw ParseError(description: "DATABASE_URL scheme must be postgres:// or postgresql://, not \(scheme)://")
        }
        var rest = Substring(text[schemeEnd.upperBound...])
        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                query[String(parts[0])] = parts.count > 1 ? Self.percentDecode(parts[1]) : ""
            }
            rest = rest[..<q]
        }
        var userInfo: Substring = ""
        if let at = rest.lastIndex(of: "@") {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        var database = ""
        if let slash = rest.firstIndex(of: "/") {
            database = Self.percentDecode(rest[rest.index(after: slash)...])
            rest = rest[..<slash]
        }
        var host = "127.0.0.1"
        var port = 5432
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let parsed = Int(rest[rest.index(after: colon)...]), (1...65535).contains(parsed) else {
                throw ParseError(description: "DATABASE_URL has an invalid port: \(rest[rest.index(after: colon)...])")
            }
            port = parsed
            host = String(rest[..<colon])
        } else if !rest.isEmpty {
            host = String(rest)
        }
        host = Self.percentDecode(Substring(host))
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }  // IPv6 literal
        var username = "postgres"
        var password: String?
        if !userInfo.isEmpty {
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            username = Self.percentDecode(parts[0])
            if parts.count > 1 { password = Self.percentDecode(parts[1]) }
        }
        guard !database.isEmpty else {
            throw ParseError(description: "DATABASE_URL must name a database, e.g. postgres://user@host:5432/pgtrack")
        }
        let mode = query["sslmode"].map { $0 == "verify-full" || $0 == "verify-ca" ? "require" : $0 } ?? "disable"
        guard let sslMode = SSLMode(rawValue: mode == "allow" ? "prefer" : mode) else {
            throw ParseError(description: "DATABASE_URL sslmode must be disable, prefer or require, not \(mode)")
        }
        var socketDirectory = query["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        if host.hasPrefix("/") { socketDirectory = host }
        self.init(host: host, port: port, username: username, password: password, database: database,
                  sslMode: sslMode, unixSocketDirectory: socketDirectory)
    }

    /// The same server, another database (tests clone databases from a template).
    public func with(database: String) -> DatabaseURL {
        var copy = self
        copy.database = database
        return copy
    }

    /// Written form, with the password hidden, for logs and health output.
    public var redacted: String {
        "postgres://\(username)\(password == nil ? "" : ":***")@\(unixSocketDirectory ?? host):\(port)/\(database)"
    }

    /// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as written.
    private static func percentDecode(_ text: Substring) -> String {
        let input = Array(text.utf8)
        var bytes: [UInt8] = []
        var index = 0
        while index < input.count {
            if input[index] == UInt8(ascii: "%"), index + 2 < input.count,
               let value = UInt8(String(decoding: input[(index + 1)...(index + 2)], as: UTF8.self), radix: 16) {
                bytes.append(value)
                index += 3
            } else {
                bytes.append(input[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
