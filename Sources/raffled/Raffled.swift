import ArgumentParser
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import Foundation
import RaffleAdmission
import RaffleCore
import RaffleLedger
import RafflePostgres
import RaffleServer
import RaffleStorage
import ServiceLifecycle
import UnixSignals

/// `raffled`: the raffle-entry ingestion server (`raffled serve`, the default), `raffled verify`
/// and `raffled backup`.
@main
struct Raffled: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raffled",
        abstract: "Raffle-entry ingestion over HTTP/2 and HTTP/1.1 (TLS optional), raw TCP and UDP, with a durable, deduplicating ledger.",
        version: "raffled \(gitRevision)",
        subcommands: [Serve.self, Verify.self, Backup.self],
        defaultSubcommand: Serve.self
    )

    /// `raffled --help` (and `-h`, `help`) shows what an operator needs first: the server's options,
    /// as `raffled serve --help` does, then the other commands. Everything else parses as usual.
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments == ["--help"] || arguments == ["-h"] || arguments == ["help"] {
            print(Raffled.helpMessage(for: Serve.self))
            print(
                """

                OTHER COMMANDS:
                  verify                  \(Verify.configuration.abstract)
                  backup                  \(Backup.configuration.abstract)
                  (raffled help verify, raffled help backup: their options; raffled --version: the build)
                """)
            return
        }
        do {
            await main(try ServeEnvironment.arguments(arguments, environment: ProcessInfo.processInfo.environment))
        } catch {
            exit(withError: error)
        }
    }
}

/// Configuration from the environment: `RAFFLED_<OPTION>` (upper case, `-` as `_`) stands for
/// `--<option>` of `raffled serve` — `RAFFLED_DATA=/var/lib/raffled`, `RAFFLED_TLS_CERT=…`,
/// `RAFFLED_REUSE_PORT=true` for a flag — for service managers and containers. A flag on the command
/// line wins over the same option in the environment; an unknown `RAFFLED_` name is an error that
/// names the variable.
enum ServeEnvironment {
    struct UnknownVariable: Error, CustomStringConvertible {
        var description: String
    }

    /// `arguments` with the environment's options added (for `serve`, the default command, only).
    static func arguments(_ arguments: [String], environment: [String: String]) throws -> [String] {
        let isServe = arguments.first.map { $0 == "serve" || $0.hasPrefix("-") } ?? true
        let variables = environment.filter { $0.key.hasPrefix("RAFFLED_") }.sorted { $0.key < $1.key }
        guard isServe, !variables.isEmpty else { return arguments }
        let known = options()
        var added: [String] = []
        for (name, value) in variables {
            let option = "--" + name.dropFirst("RAFFLED_".count).lowercased().replacingOccurrences(of: "_", with: "-")
            guard let takesValue = known[option] else {
                throw UnknownVariable(description: "\(name): raffled serve has no option \(option) (see raffled --help)")
            }
            if arguments.contains(where: { $0 == option || $0.hasPrefix(option + "=") }) { continue }  // the command line wins
            if takesValue {
                added.append(option + "=" + value)
            } else if ["1", "true", "yes", "on"].contains(value.lowercased()) {
                added.append(option)
            } else if !["0", "false", "no", "off", ""].contains(value.lowercased()) {
                throw UnknownVariable(description: "\(name)=\(value): \(option) is a flag; give true or false")
            }
        }
        return arguments + added
    }

    /// `raffled serve`'s options, read from its help: name → whether it takes a value.
    static func options() -> [String: Bool] {
        var known: [String: Bool] = [:]
        for line in Raffled.helpMessage(for: Serve.self, columns: 1_000).split(separator: "\n") {
            let trimmed = line.drop { $0 == " " }
            guard trimmed.hasPrefix("--") else { continue }
            let name = String(trimmed.prefix { $0 != " " && $0 != "," })
            known[name] = trimmed.dropFirst(name.count).hasPrefix(" <")
        }
        known.removeValue(forKey: "--help")
        return known
    }
}

/// `--log-format`.
enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// `raffled serve`: runs the server.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the server (the default command).",
        discussion: """
            Serves the framed binary protocol (Protocol/PROTOCOL.md) on POST /v1/entries and a JSON \
            admin API on the same port, over HTTP/2 or HTTP/1.1 (with --tls-cert/--tls-key: HTTPS, ALPN \
            h2 and http/1.1). Admin calls need an admin key: --admin-keys FILE, or the key raffled \
            writes to DATA/admin.key at first start. SIGHUP reloads the TLS certificate and key. \
            Try: curl http://HOST:PORT/healthz
            """
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Main port (HTTP/2 and HTTP/1.1); 0 picks a free one.") var port = 8080
    @Option(help: "Raw-TCP frames port (default: the HTTP/2 port + 1); --tcp-port=-1 turns raw TCP off.") var tcpPort: Int?
    @Option(help: "UDP frames port (default: the HTTP/2 port + 2); --udp-port=-1 turns UDP off.") var udpPort: Int?
    @Option(help: "Largest UDP request, bytes (default 1200).") var udpMaxDatagram = 1_200
    @Option(name: .customLong("data"), help: "Data directory for the write-ahead log (and admin.key).") var data = "./raffle-data"
    @Option(
        help: """
            Where entries are kept: "local" (the write-ahead log in --data, the default) or a PostgreSQL URL \
            postgres://user[:password]@host:port/database[?sslmode=require] shared by several raffled nodes.
            """)
    var ledger = "local"
    @Flag(help: "Share the ports with other raffled processes on this host (SO_REUSEPORT); needs --ledger postgres://….")
    var reusePort = false
    @Option(help: "Event loops (threads); default: one per core.") var loops: Int?
    @Option(help: "fsync: acknowledge only once on disk (default). none: experiments only, data may be lost.")
    var durability: DurabilityOption = .fsync
    @Option(help: "Most entries per batch.") var maxEntries = 4_096
    @Option(help: "MiB preallocated for request bodies that arrive in pieces.") var ingestBufferMb = 64
    @Option(help: "Write-ahead-log segment size in MiB.") var segmentMb = 64
    @Option(
        help: """
            Write a checkpoint (every raffle and entry) after this many MiB of log, and at shutdown; \
            restart then replays at most about that much. Segments a checkpoint covers are removed. 0: never.
            """)
    var checkpointMb = 64
    @Option(
        help: """
            Group commit: start a log commit (write + fdatasync) at most once per this many microseconds. \
            Under load each commit covers more entries (fewer syscalls and wake-ups: more throughput); an \
            entry waits at most this much longer. 0: commit as soon as the previous commit ends.
            """)
    var commitIntervalUs = 500
    @Option(
        help: """
            Write zeros this many KiB ahead of small log commits, so that a commit's fdatasync writes no \
            new file length or blocks (less CPU and a shorter wait per commit). 0: off — do so on a \
            copy-on-write file system (btrfs, ZFS), where overwriting gains nothing.
            """)
    var logZeroFillKib = 1_024
    @Option(help: "Most concurrent HTTP/2 streams per connection.") var maxStreams: UInt32 = 256
    @Option(help: "Close idle connections after this many seconds.") var idleTimeout = 60
    @Option(help: "Most open TCP connections from one IPv4 address or IPv6 /64 (0: no cap; use 0 behind a load balancer).")
    var maxConnectionsPerAddress = 512
    @Option(help: "Most new TCP connections per second from one IPv4 address or IPv6 /64, a burst of twice that (0: no limit; use 0 behind a load balancer).")
    var maxNewConnectionsPerAddress = 100
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"
    @Option(help: "Log format: text (one readable line per event) or json (one JSON object per line, for log shippers).")
    var logFormat: LogFormat = .text
    @Option(help: "JSON limits file: global and anonymous limits, request cost, API-key clients (see README).")
    var limits: String?
    @Option(help: "Server-wide admission rate, entries/s (default 5,000,000; 0 turns the global bucket off).")
    var globalRate: UInt64?
    @Option(help: "Server-wide burst, entries (default twice the rate).") var globalBurst: UInt64?
    @Option(help: "Per-connection rate for requests without a known API key, entries/s (default 20,000).")
    var anonymousRate: UInt64?
    @Option(
        help: """
            Comparison runs only: no waiting room — batches the global bucket cannot take are all told \
            this retry-after (ms) and the clients' jitter does the spreading (default: waiting-room slots).
            """)
    var flatRetryAfterMs: UInt32?
    @Option(help: "Per-connection burst for requests without a known API key (default twice the rate).")
    var anonymousBurst: UInt64?
    @Option(help: "TLS certificate chain (PEM: the server's certificate, then intermediates). Needs --tls-key.")
    var tlsCert: String?
    @Option(help: "TLS private key (PEM) of the certificate. Needs --tls-cert.") var tlsKey: String?
    @Option(
        help: """
            JSON admin keys file: {"keys":[{"name":"ops","sha256":"<hex SHA-256 of the key>"}]} ("key" in clear is \
            accepted too). Default: DATA/admin.key, made at first start.
            """)
    var adminKeys: String?
    @Option(help: "Serve the admin API and /metrics on this plaintext port instead of the main one (0 picks one).")
    var adminPort: Int?
    @Option(help: "Address of the admin listener (default: --host).") var adminHost: String?

    enum DurabilityOption: String, ExpressibleByArgument, CaseIterable {
        case fsync, none
    }

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0 to 65535") }
        if let tcpPort { guard (-1...65_535).contains(tcpPort) else { throw ValidationError("--tcp-port must be -1 (off) or 0 to 65535") } }
        if let udpPort { guard (-1...65_535).contains(udpPort) else { throw ValidationError("--udp-port must be -1 (off) or 0 to 65535") } }
        guard (64...65_507).contains(udpMaxDatagram) else { throw ValidationError("--udp-max-datagram must be 64 to 65507") }
        guard (1...65_535).contains(maxEntries) else { throw ValidationError("--max-entries must be 1 to 65535") }
        guard ingestBufferMb >= 1 else { throw ValidationError("--ingest-buffer-mb must be at least 1") }
        guard segmentMb >= 1 else { throw ValidationError("--segment-mb must be at least 1") }
        guard checkpointMb >= 0 else { throw ValidationError("--checkpoint-mb must be 0 (never) or more") }
        guard (0...1_000_000).contains(commitIntervalUs) else {
            throw ValidationError("--commit-interval-us must be 0 (no pacing) to 1000000 (one second)")
        }
        guard (0...65_536).contains(logZeroFillKib) else {
            throw ValidationError("--log-zero-fill-kib must be 0 (off) to 65536 (64 MiB)")
        }
        if let loops, loops < 1 { throw ValidationError("--loops must be at least 1") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level \(logLevel)") }
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if let adminPort { guard (0...65_535).contains(adminPort) else { throw ValidationError("--admin-port must be 0 to 65535") } }
        if adminHost != nil && adminPort == nil { throw ValidationError("--admin-host needs --admin-port") }
        if reusePort && ledger == "local" {
            throw ValidationError("--reuse-port needs a shared ledger (--ledger postgres://…): processes with local ledgers would each keep their own entries")
        }
        if ledger != "local" {
            do throws(PostgresURLError) { _ = try PostgresLedgerConfiguration(url: ledger) } catch { throw ValidationError("--ledger: \(error)") }
        }
    }

    /// The admin keys: from `--admin-keys`, or the key in DATA/admin.key, made (0600) when missing.
    func loadAdminKeys(logger: Logger) throws -> (keys: AdminKeys, note: String) {
        if let adminKeys {
            let keys = try AdminKeys.load(path: adminKeys)
            return (keys, "admin keys from \(adminKeys) (\(keys.keys.map(\.name).joined(separator: ", ")))")
        }
        let path = (data as NSString).appendingPathComponent("admin.key")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard key.utf8.count >= AdminKeys.minimumKeyLength else {
                throw AdminKeysError(message: "\(path) holds a key shorter than \(AdminKeys.minimumKeyLength) characters")
            }
            return (AdminKeys([.init(name: "admin.key", key: key)]), "admin key in \(path)")
        }
        let key = AdminKeys.generateKey()
        guard FileManager.default.createFile(atPath: path, contents: Data((key + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw AdminKeysError(message: "cannot write a new admin key to \(path)")
        }
        logger.notice("made a new admin key", metadata: ["file": "\(path)"])
        return (AdminKeys([.init(name: "admin.key", key: key)]), "admin key in \(path) (new)")
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { [logFormat] label in
            switch logFormat {
            case .json:
                return JSONLogHandler(label: label, level: level)
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "raffled")
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        config.tcpPort = tcpPort
        config.udpPort = udpPort
        config.udpMaxDatagramBytes = udpMaxDatagram
        if let loops { config.eventLoops = loops }
        config.frameLimits = .init(maxPayloadBytes: 16 + 16 * maxEntries, maxEntriesPerBatch: maxEntries)
        config.ingestBufferBytes = ingestBufferMb << 20
        let local = LocalLedgerConfiguration(directory: data, durability: durability == .fsync ? .fsync : .none, segmentBytes: segmentMb << 20,
            checkpointBytes: checkpointMb << 20, commitInterval: .microseconds(commitIntervalUs), logZeroFillBytes: logZeroFillKib << 10)
        config.http2.maxConcurrentStreams = maxStreams
        config.idleTimeoutMilliseconds = Int64(idleTimeout) * 1_000
        config.maxConnectionsPerAddress = max(maxConnectionsPerAddress, 0)
        config.maxNewConnectionsPerAddressPerSecond = max(maxNewConnectionsPerAddress, 0)
        config.adminPort = adminPort
        config.adminHost = adminHost
        config.reusePort = reusePort
        if let tlsCert, let tlsKey { config.tls = TLSFiles(certificateChainPath: tlsCert, privateKeyPath: tlsKey) }
        let adminNote: String
        do {
            if let limits { config.admission = try AdmissionConfiguration.load(path: limits) }
            (config.adminKeys, adminNote) = try loadAdminKeys(logger: logger)
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        if let rate = globalRate {
            config.admission.global = rate == 0 ? nil : RateLimit(ratePerSecond: rate, burst: globalBurst ?? rate * 2)
        } else if let burst = globalBurst, let global = config.admission.global {
            config.admission.global = RateLimit(ratePerSecond: global.ratePerSecond, burst: burst)
        }
        if let flatRetryAfterMs { config.admission.flatRetryAfterMilliseconds = flatRetryAfterMs }
        if anonymousRate != nil || anonymousBurst != nil {
            let rate = anonymousRate ?? config.admission.anonymous.ratePerSecond
            config.admission.anonymous = RateLimit(ratePerSecond: rate, burst: anonymousBurst ?? rate * 2)
        }
        let keyed = config.admission.clients.map(\.name).joined(separator: ", ")
        logger.info(
            "admission",
            metadata: [
                "global": "\(config.admission.global.map { "\($0.ratePerSecond)/s burst \($0.burst)" } ?? "off")",
                "anonymous": "\(config.admission.anonymous.ratePerSecond)/s burst \(config.admission.anonymous.burst) per connection",
                "clients": "\(keyed.isEmpty ? "none" : keyed)",
            ])

        let server: RaffleServer
        do {
            if ledger == "local" {
                server = try await RaffleServer.start(configuration: config, local: local, logger: logger)
            } else {
                let shared = try await PostgresLedger.connect(try PostgresLedgerConfiguration(url: ledger), logger: logger)
                server = try await RaffleServer.start(configuration: config, ledger: shared, logger: logger)
            }
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        let ledgerTarget = (try? PostgresLedgerConfiguration(url: ledger))?.target ?? ledger
        let hostForURL = host.contains(":") ? "[\(host)]" : host
        let durabilityNote = local.durability == .none ? " — EXPERIMENTS ONLY: acknowledged entries may be lost" : ""
        let scheme = server.usesTLS ? "https" : "http"
        let protocols = server.usesTLS ? "TLS, ALPN h2 and http/1.1" : "HTTP/2 and HTTP/1.1"
        let adminHostForURL = (adminHost ?? host).contains(":") ? "[\(adminHost ?? host)]" : (adminHost ?? host)
        let lines = [
            "raffled listening on \(scheme)://\(hostForURL):\(server.port) (\(protocols)), "
                + (ledger == "local"
                    ? "data in \(data), durability \(local.durability.rawValue)\(durabilityNote)"
                    : "ledger in PostgreSQL (\(ledgerTarget))"),
            "frames also on raw TCP\(server.usesTLS ? " over TLS" : "") \(server.tcpPort.map { "port \($0)" } ?? "(off)") and UDP \(server.udpPort.map { "port \($0)" } ?? "(off)")",
            server.adminPort.map { "admin API and /metrics on http://\(adminHostForURL):\($0); \(adminNote)" } ?? adminNote,
            "try: curl \(server.usesTLS ? "--cacert CA.pem " : "")\(scheme)://\(hostForURL):\(server.port)/healthz",
        ]
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: RaffleService(server: server, onRunning: { lines.forEach(say) }))
        ]
        if server.usesTLS { services.append(.init(service: TLSReloadService(server: server, logger: logger))) }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Reloads the TLS certificate and key on SIGHUP: new connections get the new ones, open
/// connections keep theirs. A file that cannot be used is logged and the old pair stays.
struct TLSReloadService: Service {
    let server: RaffleServer
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            do {
                let loaded = try server.reloadTLS()
                logger.notice(
                    "reloaded the TLS certificate and key",
                    metadata: ["subject": "\(loaded.subject)", "chain": "\(loaded.chainLength)", "expired": "\(loaded.expired)"])
            } catch {
                logger.error("SIGHUP: kept the old TLS certificate: \(error)")
            }
        }
    }
}

/// Writes a line to standard output unbuffered, so a supervisor (or a test) reading a pipe sees it
/// at once.
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(1, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
            if n <= 0 { break }
            offset += n
        }
    }
}

/// `raffled verify`: recomputes a raffle's draw offline from an export of its entries and the
/// revealed seed, and checks it against what the server published.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recompute a draw from an entry export and the revealed seed.",
        discussion: """
            Export: GET /v1/raffles/ID/export?format=csv (or ndjson). Seed, hash and winners: \
            GET /v1/raffles/ID/winners. The draw is specified in Protocol/DRAW.md.
            """
    )

    @Option(help: "The entry export (CSV or NDJSON).") var export: String
    @Option(help: "The revealed seed (hex).") var seed: String
    @Option(help: "How many winners were drawn.") var winners: Int
    @Option(help: "The commitment published at creation (hex SHA-256 of the seed), to check.") var commitment: String?
    @Option(help: "The published entry-list hash, to check.") var hash: String?
    @Option(help: "The published winners, comma-separated, to check.") var expect: String?

    func run() throws {
        guard let text = try? String(contentsOfFile: export, encoding: .utf8) else {
            throw ValidationError("cannot read \(export)")
        }
        let published = expect.map { $0.split(separator: ",").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) } }
        let result: DrawVerification
        do {
            result = try DrawVerification(
                export: text, seedHex: seed, winnerCount: winners, commitment: commitment, hash: hash, expected: published)
        } catch let failure as DrawVerification.Failure {
            throw ValidationError("--seed: \(failure)")
        }
        for line in result.lines { say(line) }
        if !result.ok { throw ExitCode(1) }
    }
}

/// `raffled backup`: a consistent copy of a local data directory, safe while raffled serves from it.
struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a data directory consistently, while the server runs.",
        discussion: """
            Copies the newest checkpoint, the log segments after it and admin.key into a new directory, \
            syncs them, then opens the copy to check it and count what it holds. Restore: stop raffled, \
            point --data at the copy (or move it into place), start raffled.
            """
    )

    @Option(name: .customLong("data"), help: "The data directory to copy (raffled's --data).") var data = "./raffle-data"
    @Option(help: "Where to put the copy: a new or empty directory.") var to: String

    func run() throws {
        let started = ContinuousClock.now
        let report: LocalBackup.Report
        do {
            report = try LocalBackup.copy(from: data, to: to) { name, bytes in
                say("  copied \(name) (\(bytes >> 20) MiB)")
            }
        } catch let failure as LocalBackup.Failure {
            throw ValidationError(failure.description)
        }
        let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18 + Double((ContinuousClock.now - started).components.seconds)
        say(
            "backup of \(data) in \(to): \(report.checkpoint == nil ? "no checkpoint" : "a checkpoint") + \(report.segments) segment(s), "
                + "\(report.bytes >> 20) MiB; verified: \(report.raffles) raffle(s), \(report.entries) entries"
                + (report.cutTail ? " (a record being written as it was copied was cut off)" : "")
                + String(format: " (%.2f s)", seconds))
    }
}
