import ArgumentParser
import Foundation
import RaffleClient
import RaffleClientHTTP2
import RaffleCore
import RaffleWire

/// `raffle`: the command line for raffled, on top of the RaffleClient library.
@main
struct Raffle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raffle",
        abstract: "Create, fill, close, draw and verify raffles on a raffled server.",
        discussion: """
            The server is --server HOST:PORT or https://HOST:PORT (default $RAFFLE_SERVER, else \
            127.0.0.1:8080); --ca-file trusts a private CA (and means TLS). The API key is --api-key (default \
            $RAFFLE_API_KEY); admin calls (create, close, draw, export, stats) need --admin-key (default \
            $RAFFLE_ADMIN_KEY) or --admin-key-file (e.g. raffle-data/admin.key). A typical run:
              raffle create --title "Sneaker drop" --duration 10m --winners 3
              raffle submit 1 entries.csv
              raffle close 1
              raffle verify 1
            """,
        version: "raffle \(gitRevision)",
        subcommands: [Create.self, List.self, Show.self, Submit.self, Close.self, Draw_.self, Winners.self, ExportCommand.self, Verify.self]
    )
}

/// Where the server is and who we are.
struct ServerOptions: ParsableArguments {
    @Option(help: "The raffled server, HOST:PORT (default: $RAFFLE_SERVER or 127.0.0.1:8080).") var server: String?
    @Option(help: "API key sent as a bearer token with entries (default: $RAFFLE_API_KEY).") var apiKey: String?
    @Option(help: "Admin key for create, close, draw, export and stats (default: $RAFFLE_ADMIN_KEY).") var adminKey: String?
    @Option(help: "Read the admin key from this file (e.g. raffle-data/admin.key).") var adminKeyFile: String?
    @Option(help: "Trust this CA (PEM) for the server's certificate; implies TLS.") var caFile: String?
    @Option(help: "Give up on a call after this long, e.g. 30s, 2m.") var deadline = "30s"

    func validate() throws {
        _ = try endpoint()
        guard CLIDuration.parse(deadline) != nil else { throw ValidationError("--deadline: expected a duration such as 30s or 2m") }
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) { throw ValidationError("--ca-file: cannot read \(caFile)") }
        if adminKey != nil && adminKeyFile != nil { throw ValidationError("give --admin-key or --admin-key-file, not both") }
    }

    /// The admin key: --admin-key, --admin-key-file, or $RAFFLE_ADMIN_KEY.
    func resolvedAdminKey() throws -> String? {
        if let adminKey { return adminKey }
        if let adminKeyFile {
            guard let text = try? String(contentsOfFile: adminKeyFile, encoding: .utf8) else {
                throw ValidationError("--admin-key-file: cannot read \(adminKeyFile)")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return ProcessInfo.processInfo.environment["RAFFLE_ADMIN_KEY"]
    }

    /// Whether an API key was given (flag or environment).
    var hasAPIKey: Bool { apiKey != nil || ProcessInfo.processInfo.environment["RAFFLE_API_KEY"] != nil }

    /// Whether to speak TLS: an https:// server or a CA file.
    var usesTLS: Bool {
        caFile != nil || (server ?? ProcessInfo.processInfo.environment["RAFFLE_SERVER"] ?? "").hasPrefix("https://")
    }

    func endpoint() throws -> (host: String, port: Int) {
        let text = server ?? ProcessInfo.processInfo.environment["RAFFLE_SERVER"] ?? "127.0.0.1:8080"
        var rest = Substring(text)
        for scheme in ["http://", "https://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(port) else {
            throw ValidationError("--server: expected HOST:PORT, got \(text)")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("--server: expected HOST:PORT, got \(text)") }
        return (host, port)
    }

    func client(window: Int? = nil) throws -> RaffleClient {
        let (host, port) = try endpoint()
        var config = RaffleClientConfiguration(
            apiKey: apiKey ?? ProcessInfo.processInfo.environment["RAFFLE_API_KEY"], adminKey: try resolvedAdminKey())
        config.deadline = CLIDuration.parse(deadline) ?? .seconds(30)
        if let window { config.streamWindow = window }
        guard usesTLS else { return RaffleClient(transport: HTTP2Transport(host: host, port: port), configuration: config) }
        let transport: HTTP2Transport
        do { transport = try HTTP2Transport(host: host, port: port, tls: HTTP2Transport.tlsConfiguration(caFile: caFile)) } catch {
            throw ValidationError("--ca-file: cannot use \(caFile ?? "the system trust store"): \(error)")
        }
        return RaffleClient(transport: transport, configuration: config)
    }
}

/// Durations on the command line: `90s`, `10m`, `2h`, `1d`, `500ms`, or plain seconds.
enum CLIDuration {
    static func parse(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, ms) in units where text.hasSuffix(suffix) {
            guard let n = Int64(text.dropLast(suffix.count)), n >= 0 else { return nil }
            return .milliseconds(n * ms)
        }
        return Int64(text).flatMap { $0 >= 0 ? .seconds($0) : nil }
    }
}

/// Prints a value as pretty JSON.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func describe(_ r: RaffleInfo) -> String {
    let closes = Date(timeIntervalSince1970: Double(r.spec.closesAt) / 1000).formatted(.iso8601)
    var text = "raffle \(r.id) \"\(r.spec.title)\": \(r.state.rawValue), \(r.entries) entries (\(r.tickets) tickets), "
    text += "\(r.spec.winners) winner\(r.spec.winners == 1 ? "" : "s"), closes \(closes)\n  seed commitment \(r.seedCommitment)"
    if let d = r.draw { text += "\n" + describe(d) }
    return text
}

func describe(_ d: DrawResult) -> String {
    "  drawn from \(d.entries) entries (\(d.tickets) tickets), entry-list hash \(d.entryListHash)\n  seed \(d.seed)\n  winners: "
        + d.winners.map(String.init).joined(separator: ", ")
}

/// A raffle id argument.
func raffleID(_ text: String) throws -> UInt64 {
    guard let id = UInt64(text), id > 0 else { throw ValidationError("expected a raffle id (a positive number), got \(text)") }
    return id
}

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a raffle, open from now.")
    @OptionGroup var options: ServerOptions
    @Option(help: "Title shown to people.") var title: String
    @Option(help: "How long it stays open, e.g. 10m, 2h, 1d.") var duration: String
    @Option(help: "How many winners to draw.") var winners = 1
    @Option(help: "The most tickets one user may ask for.") var maxTickets: UInt32 = 1
    @Option(help: "Entries you expect: the server sizes the raffle's index for them once (a hint, not a limit).") var expectedEntries: Int?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard let d = CLIDuration.parse(duration), d >= .seconds(1) else { throw ValidationError("--duration: expected e.g. 90s, 10m, 2h") }
        guard winners >= 1 else { throw ValidationError("--winners must be at least 1") }
        guard maxTickets >= 1 else { throw ValidationError("--max-tickets must be at least 1") }
        if let n = expectedEntries, n < 0 || n > RaffleSpec.maxExpectedEntries {
            throw ValidationError("--expected-entries must be 0 to 100,000,000")
        }
    }

    func run() async throws {
        let client = try options.client()
        defer { Task { await client.transport.close() } }
        let r = try await client.createRaffle(
            title: title, duration: CLIDuration.parse(duration) ?? .seconds(60), winners: winners, maxTicketsPerUser: maxTickets,
            expectedEntries: expectedEntries)
        if json { try printJSON(r) } else { print(describe(r)) }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List raffles.")
    @OptionGroup var options: ServerOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let raffles = try await options.client().raffles()
        if json { return try printJSON(raffles) }
        if raffles.isEmpty { print("no raffles") }
        for r in raffles { print("\(r.id)\t\(r.state.rawValue)\t\(r.entries) entries\t\(r.spec.title)") }
    }
}

struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one raffle: state, entries, commitment, draw.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id.") var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let r = try await options.client().raffle(try raffleID(id))
        if json { try printJSON(r) } else { print(describe(r)) }
    }
}

struct Close: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Close a raffle now, reveal its seed and draw the winners.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id.") var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let r = try await options.client().close(try raffleID(id))
        if json { try printJSON(r) } else { print(describe(r)) }
    }
}

struct Draw_: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "draw", abstract: "Draw a raffle (closing it first if it is still open); the same as close.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id.") var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let r = try await options.client().draw(try raffleID(id))
        if json { try printJSON(r) } else { print(describe(r)) }
    }
}

struct Winners: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a drawn raffle's winners, seed and entry-list hash.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id.") var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let d = try await options.client().winners(try raffleID(id))
        if json { try printJSON(d) } else { print(describe(d)) }
    }
}

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Export a raffle's entries in canonical order.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id.") var id: String
    @Option(help: "csv or ndjson.") var format = "csv"
    @Option(name: .shortAndLong, help: "Write to this file instead of stdout.") var output: String?

    func validate() throws {
        guard ["csv", "ndjson"].contains(format) else { throw ValidationError("--format must be csv or ndjson") }
    }

    func run() async throws {
        let text = try await options.client().export(try raffleID(id), format: format)
        if let output {
            try text.write(toFile: output, atomically: true, encoding: .utf8)
            FileHandle.standardError.write(Data("wrote \(output)\n".utf8))
        } else {
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recompute a draw offline and check it against what was published.",
        discussion: """
            raffle verify ID fetches the raffle's export, commitment and published draw from the server and \
            recomputes the winners locally. With --export FILE --seed HEX --winners N it needs no server at all \
            (add --commitment, --hash, --expect to check the published values). Exit status 1 if anything \
            does not match.
            """
    )
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id (fetch everything from the server).") var id: String?
    @Option(help: "An export file (CSV or NDJSON).") var export: String?
    @Option(help: "The revealed seed (hex).") var seed: String?
    @Option(help: "How many winners were drawn.") var winners: Int?
    @Option(help: "The commitment published at creation, to check.") var commitment: String?
    @Option(help: "The published entry-list hash, to check.") var hash: String?
    @Option(help: "The published winners, comma-separated, to check.") var expect: String?

    func validate() throws {
        if id == nil && (export == nil || seed == nil || winners == nil) {
            throw ValidationError("give a raffle id, or --export, --seed and --winners to verify offline")
        }
    }

    func run() async throws {
        let result: DrawVerification
        if let id {
            let client = try options.client()
            let raffle = try raffleID(id)
            let info = try await client.raffle(raffle)
            guard let draw = info.draw else { throw ValidationError("raffle \(raffle) has not been drawn yet") }
            let text = try await client.export(raffle)
            if let export { try text.write(toFile: export, atomically: true, encoding: .utf8) }
            result = try DrawVerification(
                export: text, seedHex: draw.seed, winnerCount: info.spec.winners, commitment: info.seedCommitment,
                hash: draw.entryListHash, expected: draw.winners)
        } else {
            guard let export, let seed, let winners else { return }
            guard let text = try? String(contentsOfFile: export, encoding: .utf8) else { throw ValidationError("cannot read \(export)") }
            let published = expect.map { $0.split(separator: ",").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) } }
            do {
                result = try DrawVerification(
                    export: text, seedHex: seed, winnerCount: winners, commitment: commitment, hash: hash, expected: published)
            } catch let failure as DrawVerification.Failure {
                throw ValidationError("\(failure)")
            }
        }
        for line in result.lines { print(line) }
        print(result.ok ? "verified" : "NOT VERIFIED")
        if !result.ok { throw ExitCode(1) }
    }
}
