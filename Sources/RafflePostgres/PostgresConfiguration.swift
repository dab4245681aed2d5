import Foundation
public import PostgresNIO

/// How a `PostgresLedger` reaches PostgreSQL and how it batches.
public struct PostgresLedgerConfiguration: Sendable {
    /// Where PostgreSQL is: host, port, user, password, database, TLS.
    public var client: PostgresClient.Configuration
    /// Group-commit rounds (statements) in flight at once on this node. The next round starts when
    /// one returns, with every batch that arrived meanwhile; no timer.
    public var roundsInFlight = 4
    /// Entries admitted and not yet decided by PostgreSQL past which new batches are answered
    /// `unavailable` (the server's backpressure answers `server_busy` well before this).
    public var maxPendingEntries = 262_144
    /// Entries this node remembers as stored, to answer a retry `already_entered` without a round
    /// trip; past this, new ones are not remembered (8 bytes and some slack each).
    public var knownEntriesLimit = 8_000_000
    /// A round that has not returned after this long fails: its batches are answered `unavailable`
    /// (never acknowledged) and PostgreSQL is marked unreachable until a probe succeeds.
    public var roundTimeout: Duration = .seconds(5)
    /// How long `PostgresLedger.connect` tries to reach PostgreSQL and set up the schema.
    public var startTimeout: Duration = .seconds(10)

    public init(client: PostgresClient.Configuration) {
        self.client = client
    }

    /// Reads `postgres://user[:password]@host[:port]/database[?sslmode=disable|prefer|require]`
    /// (`postgresql://` too). Without `sslmode`, TLS is off. The port defaults to 5432, the user to
    /// `postgres` and the database to the user's name.
    public init(url: String) throws(PostgresURLError) {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme, scheme == "postgres" || scheme == "postgresql" else {
            throw PostgresURLError("the PostgreSQL URL must look like postgres://user@host:5432/database, not \(url)")
        }
        guard let host = parts.host, !host.isEmpty else { throw PostgresURLError("the PostgreSQL URL \(url) names no host") }
        let user = parts.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        let password = parts.password.flatMap { $0.removingPercentEncoding }
        let path = parts.path.hasPrefix("/") ? String(parts.path.dropFirst()) : parts.path
        let database = path.isEmpty ? user : path
        let tls: PostgresClient.Configuration.TLS
        switch parts.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "disable" {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        case let other: throw PostgresURLError("sslmode=\(other) is not one of disable, prefer, require")
        }
        // IPv6 literals come back without their brackets.
        var client = PostgresClient.Configuration(
            host: host, port: parts.port ?? 5432, username: user, password: password, database: database, tls: tls)
        client.options.connectTimeout = .seconds(3)
        client.options.maximumConnections = 8
        self.init(client: client)
    }
}

/// A PostgreSQL URL that cannot be used, with what is wrong with it.
public struct PostgresURLError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
