import Logging
import NIOSSL
import PostgresNIO
import TrackingCore

/// Builds PostgresNIO configurations from a `DatabaseURL`: a pooled client for queries and
/// single connections for the listener and the migrator.
public struct DatabaseConnectionSettings: Sendable {
    public let url: DatabaseURL
    public var maximumConnections: Int
    /// Shown in pg_stat_activity; the listener uses its own name so it can be found.
    public var applicationName: String

    public init(url: DatabaseURL, maximumConnections: Int = 20, applicationName: String = "pgtrack") {
        self.url = url
        self.maximumConnections = maximumConnections
        self.applicationName = applicationName
    }

    public func clientConfiguration() throws -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let directory = url.unixSocketDirectory {
            configuration = .init(unixSocketPath: Self.socketPath(directory: directory, port: url.port),
                                  username: url.username, password: url.password, database: url.database)
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch url.sslMode {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(.makeClientConfiguration())
            case .require: tls = .require(.makeClientConfiguration())
            }
            configuration = .init(host: url.host, port: url.port, username: url.username,
                                  password: url.password, database: url.database, tls: tls)
        }
        configuration.options.maximumConnections = maximumConnections
        configuration.options.additionalStartupParameters = [("application_name", applicationName)]
        return configuration
    }

    public func connectionConfiguration(applicationName: String? = nil) throws -> PostgresConnection.Configuration {
        var configuration = try baseConnectionConfiguration()
        configuration.options.additionalStartupParameters = [("application_name", applicationName ?? self.applicationName)]
        return configuration
    }

    private func baseConnectionConfiguration() throws -> PostgresConnection.Configuration {
        if let directory = url.unixSocketDirectory {
            return .init(unixSocketPath: Self.socketPath(directory: directory, port: url.port),
                         username: url.username, password: url.password, database: url.database)
        }
        let tls: PostgresConnection.Configuration.TLS
        switch url.sslMode {
        case .disable: tls = .disable
        case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
        return .init(host: url.host, port: url.port, username: url.username, password: url.password,
                     database: url.database, tls: tls)
    }

    static func socketPath(directory: String, port: Int) -> String {
        "\(directory)/.s.PGSQL.\(port)"
    }
}
