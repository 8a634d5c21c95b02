import ArgumentParser
import Foundation
import Logging

@main
struct Pgtrack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgtrack",
        abstract: "Real-time location tracking where PostgreSQL is the bus.",
        subcommands: [Serve.self, Migrate.self, Maintain.self, Database.self, Admin.self, Simulate.self, Bench.self, Demo.self])

    /// Logging is bootstrapped once per process, here and not in buildApplication (tests build many apps).
    static func bootstrapLogging() {
        let level = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
