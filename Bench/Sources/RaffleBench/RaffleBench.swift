import ArgumentParser
import Foundation
import RaffleClient
import RaffleClientHTTP2
import RaffleClientSockets
import RaffleWire
import Synchronization

/// `raffle-bench`: the load harness. Each scenario runs against a raffled it starts itself (fresh
/// data directory, durability fsync by default) or one given with `--target`, sends unique entries,
/// shows a live progress line, and ends with a table, optionally a JSON file and an SVG picture.
@main
struct RaffleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raffle-bench",
        abstract: "Load harness for raffled: drop spikes, bulk ingest, mobile traffic, and calibration.",
        discussion: """
            Scenarios: drop (N users, one entry each through RaffleClient with its backoff, arriving within T \
            seconds), bulk (K partners streaming batches), mobile (open-loop requests of 1-10 entries), single \
            (closed-loop single-entry POSTs, for the h2o comparison), get (calibration: plain GETs against any \
            HTTP/2 server, compared with h2load), smoke (a tiny run of each that checks acknowledged = stored).
            """,
        version: "raffle-bench \(gitRevision)",
        subcommands: [Drop.self, Calls.self, Bulk.self, Mobile.self, Single.self, Get.self, Smoke.self]
    )
}

enum TransportKind: String, ExpressibleByArgument, CaseIterable, Sendable {
    case http2, tcp, udp
}

struct CommonOptions: ParsableArguments {
    @Option(help: "A running raffled, HOST:PORT (raw TCP and UDP at +1 and +2). Default: start one.") var target: String?
    @Option(help: "The raffled executable to start (default: ../.build/release/raffled, then debug).") var raffled: String?
    @Option(help: "Durability of the raffled this run starts: fsync or none.") var durability = "fsync"
    @Option(parsing: .unconditionalSingleValue, help: "Extra argument for the raffled this run starts (repeat), e.g. --server-arg=--global-rate=100000.")
    var serverArg: [String] = []
    @Option(help: "Admin key of a --target server (default: $RAFFLE_ADMIN_KEY); a server this run starts needs none.")
    var adminKey: String?
    @Option(help: "Transport: http2, tcp or udp.") var transport: TransportKind = .http2
    @Option(help: "Write the result as JSON here.") var json: String?
    @Option(help: "Draw throughput and p50/p99 latency over time as SVG here.") var svg: String?

    func start() throws -> Target {
        if let target { return try Target(address: target, adminKey: adminKey ?? ProcessInfo.processInfo.environment["RAFFLE_ADMIN_KEY"]) }
        return try Target(start: Target.locate(raffled), durability: durability, arguments: serverArg)
    }

    func finish(_ result: RunResult) throws {
        result.printTable()
        if let json {
            try result.writeJSON(json)
            print("wrote \(json)")
        }
        if let svg {
            try result.svg().write(toFile: svg, atomically: true, encoding: .utf8)
            print("wrote \(svg)")
        }
    }
}

/// Makes client transports for a target.
func transport(_ kind: TransportKind, _ target: Target) throws -> any RaffleTransport {
    switch kind {
    case .http2: return HTTP2Transport(host: target.host, port: target.port)
    case .tcp:
        guard let port = target.tcpPort else { throw BenchError("the server has raw TCP off") }
        return TCPTransport(host: target.host, port: port)
    case .udp:
        guard let port = target.udpPort else { throw BenchError("the server has UDP off") }
        return UDPTransport(host: target.host, port: port)
    }
}

/// Ends a client-driven run: the throttled share from the clients, `lost` read back from the
/// server, connections closed.
func conclude(_ result: inout RunResult, clients: [RaffleClient], admin: RaffleClient, raffle: UInt64, expected: Int) async throws {
    let attempts = clients.reduce(0) { $0 + Int($1.attemptCount) }
    result.throttledShare = Double(clients.reduce(0) { $0 + Int($1.throttledCount) }) / Double(max(attempts, 1))
    try await verify(&result, admin: admin, raffle: raffle, expected: expected)
    for c in clients { await c.transport.close() }
    await admin.transport.close()
}

/// Reads back how many entries the server holds for `raffle`, and fills in `lost`.
func verify(_ result: inout RunResult, admin: RaffleClient, raffle: UInt64, expected: Int) async throws {
    let stored = try await admin.raffle(raffle).entries
    result.entriesStored = stored
    if case .number(let perEntry)? = try? await admin.stats()["indexBytesPerEntry"] { result.indexBytesPerEntry = perEntry }
    result.lost = max(expected - stored, 0)
    if stored != expected { result.notes.append("expected \(expected) entries stored, found \(stored)") }
}

// MARK: - drop

struct Drop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A drop spike: N users, one entry each through RaffleClient (with its backoff), arriving within T seconds.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Users, each entering once.") var users = 1_000_000
    @Option(help: "Seconds over which they arrive (evenly).") var within = 60.0
    // Default 8, measured (results/2026-11-24/drop-connections-sweep.txt): at 100,000 users/s, 32
    // connections carry ~3,000 requests/s each, so nearly every request is a TCP segment of its own
    // both ways and the generator's core went to 73–88 %; 8 connections batch ~4× more per write
    // (53 %), as the few multiplexed connections of an edge proxy in front of an origin would.
    @Option(help: "Client connections (sockets) the users are spread over (an edge proxy's few multiplexed connections).")
    var connections = 8
    @Flag(help: "Count every user's attempts (the most any one user needed, and the spread).") var countAttempts = false
    @Option(help: "Jitter the clients add to a server's retry-after, as a share of it (client default 0.1).") var retryJitterShare: Double?
    @Option(help: "Most jitter the clients add to a retry-after, ms (client default 100).") var maxRetryJitterMs: Int?

    func run() async throws {
        var config = RaffleClientConfiguration()
        if let retryJitterShare { config.retryAfterJitterShare = retryJitterShare }
        if let maxRetryJitterMs { config.maxRetryAfterJitter = .milliseconds(maxRetryJitterMs) }
        let result = try await runDrop(
            common: common, users: users, within: within, connections: connections, configuration: config, countAttempts: countAttempts)
        try common.finish(result)
        if result.lost != 0 { throw ExitCode(1) }
    }
}

func runDrop(
    common: CommonOptions, users: Int, within: Double, connections: Int, configuration: RaffleClientConfiguration = .init(),
    countAttempts: Bool = false
) async throws -> RunResult {
    let run = try await ScenarioRun.start(common, "drop", total: users)
    let (target, admin, raffle, recorder) = (run.target, run.admin, run.raffle, run.recorder)
    defer { target.stop() }
    var config = configuration
    config.deadline = .seconds(600)
    let counts = countAttempts ? AttemptCounts() : nil
    let clients: [RaffleClient] = try (0..<max(connections, 1)).map { _ in
        let inner = try transport(common.transport, target)
        return RaffleClient(transport: counts.map { CountingTransport(inner: inner, counts: $0) } ?? inner, configuration: config)
    }
    let start = ContinuousClock.now
    let base = UInt64.random(in: 1...(1 << 40))
    await openLoop(count: users, interval: within / Double(max(users, 1)), start: start) { i, scheduled in
        let client = clients[i % clients.count]
        return { await enterOne(base + UInt64(i), raffle, client, since: scheduled, recorder) }
    }
    let seconds = (ContinuousClock.now - start).seconds
    run.stopProgress()
    var result = RunResult(
        scenario: "drop", transport: common.transport.rawValue, target: target,
        parameters: ["users": grouped(users), "arrive within": "\(within) s", "connections": "\(connections)"], recorder: recorder, seconds: seconds)
    result.attemptsPerEntry = Double(clients.reduce(0) { $0 + Int($1.attemptCount) }) / Double(max(users, 1))
    if recorder.errors > 0 { result.notes.append("\(recorder.errors) users gave up (deadline or budget)") }
    result.notes.append("time until every entry was acknowledged: \(String(format: "%.2f", seconds)) s")
    if let counts { result.notes.append(counts.summary()) }
    try await conclude(&result, clients: clients, admin: admin, raffle: raffle, expected: users)
    return result
}

/// Attempts per user (`drop --count-attempts`), keyed by the user id in each single-entry request.
final class AttemptCounts: Sendable {
    private let table = Mutex<[UInt64: UInt32]>([:])

    func add(_ user: UInt64) { table.withLock { $0[user, default: 0] += 1 } }

    /// "attempts per user: p50 1, p90 …, p99 …, max …; users needing more than one: N".
    func summary() -> String {
        let sorted = table.withLock { Array($0.values) }.sorted()
        guard let most = sorted.last else { return "attempts per user: none counted" }
        func at(_ q: Double) -> UInt32 { sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
        let retried = sorted.count - (sorted.firstIndex { $0 > 1 } ?? sorted.count) 
        return "attempts per user: p50 \(at(0.5)), p90 \(at(0.9)), p99 \(at(0.99)), max \(most); users needing more than one: \(grouped(retried)) of \(grouped(sorted.count))"
    }
}

/// A transport that counts each single-entry request's attempt for its user, then passes it on.
struct CountingTransport: RaffleTransport {
    let inner: any RaffleTransport
    let counts: AttemptCounts

    private func count(_ frames: [UInt8]) {
        frames.withUnsafeBytes { raw in
            if case .entryBatch(let batch)? = (try? FrameDecoder().decode(raw, endOfInput: true))?.payload, batch.count == 1 {
                counts.add(batch.userID(at: 0))
            }
        }
    }

    func send(frames: [UInt8], authorization: String?) async throws -> FramesReply {
        count(frames)
        return try await inner.send(frames: frames, authorization: authorization)
    }

    func send(frames: [UInt8], authorization: String?, timeout: Duration) async throws -> FramesReply {
        count(frames)
        return try await inner.send(frames: frames, authorization: authorization, timeout: timeout)
    }

    func admin(method: String, path: String, body: [UInt8]?, authorization: String?) async throws -> AdminReply {
        try await inner.admin(method: method, path: path, body: body, authorization: authorization)
    }

    func openStream(authorization: String?) async throws -> any FrameStream { try await inner.openStream(authorization: authorization) }
    func close() async { await inner.close() }
    var requiresChecksum: Bool { inner.requiresChecksum }
}

// MARK: - bulk

struct Bulk: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Bulk ingest: K partner connections streaming batches of B entries.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Partner connections, each with one bulk stream.") var partners = 4
    @Option(help: "Entries per batch.") var batch = 1_000
    @Option(help: "Batches in flight per partner.") var window = 8
    @Option(help: "Entries in all.") var entries = 4_000_000

    func run() async throws {
        let result = try await runBulk(common: common, partners: partners, batch: batch, window: window, entries: entries)
        try common.finish(result)
        if result.lost != 0 { throw ExitCode(1) }
    }
}

func runBulk(common: CommonOptions, partners: Int, batch requested: Int, window: Int, entries: Int) async throws -> RunResult {
    // A UDP datagram holds at most 72 entries (1,200 bytes).
    let batch = common.transport == .udp ? min(requested, 72) : requested
    let run = try await ScenarioRun.start(common, "bulk", total: entries)
    let (target, admin, raffle, recorder) = (run.target, run.admin, run.raffle, run.recorder)
    defer { target.stop() }
    var config = RaffleClientConfiguration()
    config.streamWindow = window
    config.deadline = .seconds(120)
    let batches = (entries + batch - 1) / batch
    let next = Counter()
    let base = UInt64.random(in: 1...(1 << 40))
    let start = ContinuousClock.now
    let kind = common.transport
    let clients = try (0..<max(partners, 1)).map { _ in RaffleClient(transport: try transport(common.transport, target), configuration: config) }
    try await withThrowingTaskGroup(of: Void.self) { partnersGroup in
        for client in clients {
            partnersGroup.addTask {
                if kind == .udp {
                    // No streams over UDP: datagram-sized batches through submit, `window` at a time.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for _ in 0..<window {
                            group.addTask {
                                while true {
                                    let k = next.value.add(1, ordering: .relaxed).oldValue
                                    guard k < batches else { return }
                                    let n = min(batch, entries - k * batch)
                                    let sent = ContinuousClock.now
                                    let outcomes = try await client.submit((0..<n).map { Entry(userID: base + UInt64(k * batch + $0)) }, to: raffle)
                                    recorder.ack(entries: n, micros: (ContinuousClock.now - sent).micros, notAccepted: outcomes.filter { $0 != .accepted }.count)
                                }
                            }
                        }
                        try await group.waitForAll()
                    }
                    return
                }
                let stream = client.bulkStream(raffle: raffle)
                let sentAt = SentTimes()
                try await stream.send(batches: {
                    let k = next.value.add(1, ordering: .relaxed).oldValue
                    guard k < batches else { return nil }
                    let n = min(batch, entries - k * batch)
                    let slice = (0..<n).map { Entry(userID: base + UInt64(k * batch + $0)) }
                    sentAt.times.withLock { $0[slice[0].userID] = .now }  // handed straight to send
                    return slice
                }) { sent, outcomes in
                    let start = sentAt.times.withLock { $0.removeValue(forKey: sent[0].userID) } ?? .now
                    recorder.ack(entries: outcomes.count, micros: (ContinuousClock.now - start).micros, notAccepted: outcomes.filter { $0 != .accepted }.count)
                }
                await stream.close()
            }
        }
        try await partnersGroup.waitForAll()
    }
    let seconds = (ContinuousClock.now - start).seconds
    run.stopProgress()
    var result = RunResult(
        scenario: "bulk", transport: common.transport.rawValue, target: target,
        parameters: ["partners": "\(partners)", "batch": grouped(batch), "window": "\(window)", "entries": grouped(entries)],
        recorder: recorder, seconds: seconds)
    result.notes.append("latency is per batch, from send to its durable ack")
    try await conclude(&result, clients: clients, admin: admin, raffle: raffle, expected: entries)
    return result
}

// MARK: - mobile

struct Mobile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mobile traffic: open-loop requests of 1-10 entries at a target rate over many connections.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Requests per second (open loop: sent on schedule whatever the replies).") var rate = 10_000
    @Option(help: "Seconds to run.") var seconds = 10.0
    @Option(help: "Client connections.") var connections = 64

    func run() async throws {
        let result = try await runMobile(common: common, rate: rate, seconds: seconds, connections: connections)
        try common.finish(result)
        if result.lost != 0 { throw ExitCode(1) }
    }
}

func runMobile(common: CommonOptions, rate: Int, seconds runFor: Double, connections: Int) async throws -> RunResult {
    let run = try await ScenarioRun.start(common, "mobile", total: nil)
    let (target, admin, raffle, recorder) = (run.target, run.admin, run.raffle, run.recorder)
    defer { target.stop() }
    let clients = try (0..<max(connections, 1)).map { _ in RaffleClient(transport: try transport(common.transport, target)) }
    let total = Int(Double(rate) * runFor)
    var nextUser = UInt64.random(in: 1...(1 << 40))
    let firstUser = nextUser
    let start = ContinuousClock.now
    await openLoop(count: total, interval: 1.0 / Double(max(rate, 1)), start: start) { i, scheduled in
        let client = clients[i % clients.count]
        let n = Int.random(in: 1...10)
        let first = nextUser
        nextUser += UInt64(n)
        return {
            do {
                let outcomes = try await client.submit((0..<n).map { Entry(userID: first + UInt64($0)) }, to: raffle)
                recorder.ack(entries: n, micros: (ContinuousClock.now - scheduled).micros, notAccepted: outcomes.filter { $0 != .accepted }.count)
            } catch {
                recorder.error()
            }
        }
    }
    let seconds = (ContinuousClock.now - start).seconds
    run.stopProgress()
    var result = RunResult(
        scenario: "mobile", transport: common.transport.rawValue, target: target,
        parameters: ["target rate": "\(grouped(rate)) requests/s", "seconds": "\(runFor)", "connections": "\(connections)", "entries per request": "1-10"],
        recorder: recorder, seconds: seconds)
    result.notes.append("latency is measured from each request's scheduled time (no coordinated omission)")
    if result.requestsPerSecond < Double(rate) * 0.95 {
        result.notes.append("the achieved rate is below the target: the load generator or the server could not keep up")
    }
    try await conclude(&result, clients: clients, admin: admin, raffle: raffle, expected: Int(nextUser - firstUser))
    return result
}

// MARK: - calls

struct Calls: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Closed-loop RaffleClient.submit calls, one fresh user each: what the client library sustains (issue #15).")
    @OptionGroup var common: CommonOptions
    @Option(help: "Calls in all.") var calls = 1_000_000
    @Option(help: "Concurrent callers (tasks), each calling submit again as soon as its call returns.") var callers = 512
    @Option(help: "Client connections (one RaffleClient and HTTP2Transport each) the callers are spread over.") var connections = 4

    func run() async throws {
        let run = try await ScenarioRun.start(common, "calls", total: calls)
        let (target, admin, raffle, recorder) = (run.target, run.admin, run.raffle, run.recorder)
        defer { target.stop() }
        let clients: [RaffleClient] = try (0..<max(connections, 1)).map { _ in RaffleClient(transport: try transport(common.transport, target)) }
        let base = UInt64.random(in: 1...(1 << 40))
        let next = Ticket()
        let total = calls
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for c in 0..<max(callers, 1) {
                let client = clients[c % clients.count]
                group.addTask {
                    while true {
                        let i = next.take()
                        guard i < total else { return }
                        await enterOne(base + UInt64(i), raffle, client, since: ContinuousClock.now, recorder)
                    }
                }
            }
        }
        let seconds = (ContinuousClock.now - start).seconds
        run.stopProgress()
        var result = RunResult(
            scenario: "calls", transport: common.transport.rawValue, target: target,
            parameters: ["calls": grouped(calls), "callers": "\(callers)", "connections": "\(connections)"], recorder: recorder, seconds: seconds)
        result.attemptsPerEntry = Double(clients.reduce(0) { $0 + Int($1.attemptCount) }) / Double(max(calls, 1))
        if recorder.errors > 0 { result.notes.append("\(recorder.errors) calls failed") }
        try await conclude(&result, clients: clients, admin: admin, raffle: raffle, expected: recorder.entries)
        try common.finish(result)
        if result.lost != 0 || recorder.errors > 0 { throw ExitCode(1) }
    }
}

/// One `submit` of one user, recorded with its latency from `since` (the user's arrival).
func enterOne(_ user: UInt64, _ raffle: UInt64, _ client: RaffleClient, since: ContinuousClock.Instant, _ recorder: Recorder) async {
    do {
        let outcomes = try await client.submit([Entry(userID: user)], to: raffle)
        recorder.ack(entries: 1, micros: (ContinuousClock.now - since).micros, notAccepted: outcomes.first == .accepted ? 0 : 1)
    } catch {
        recorder.error()
    }
}

/// Hands out 0, 1, 2, … to concurrent callers.
final class Ticket: Sendable {
    private let next = Atomic<Int>(0)
    func take() -> Int { next.wrappingAdd(1, ordering: .relaxed).oldValue }
}

// MARK: - single, get

struct Single: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Closed-loop single-entry POSTs over HTTP/2, every user fresh (the figure compared with h2o).")
    @OptionGroup var common: CommonOptions
    @Option(help: "Requests in all.") var requests = 1_000_000
    @Option(help: "Connections.") var connections = 16
    @Option(help: "Streams in flight per connection.") var inFlight = 32

    func run() async throws {
        let run = try await ScenarioRun.start(common, "single", total: requests)
        let (target, admin, raffle, recorder) = (run.target, run.admin, run.raffle, run.recorder)
        defer { target.stop() }
        let start = ContinuousClock.now
        try await runH2Load(
            host: target.host, port: target.port,
            plan: H2LoadPlan(request: .singleEntry(raffle: raffle), connections: connections, inFlight: inFlight, requests: requests),
            recorder: recorder, userBase: UInt64.random(in: 1...(1 << 40)))
        let seconds = (ContinuousClock.now - start).seconds
        run.stopProgress()
        var result = RunResult(
            scenario: "single", transport: "http2", target: target,
            parameters: ["requests": grouped(requests), "connections": "\(connections)", "in flight per connection": "\(inFlight)"],
            recorder: recorder, seconds: seconds)
        result.attemptsPerEntry = Double(recorder.requests + recorder.throttled) / Double(max(recorder.requests, 1))
        try await verify(&result, admin: admin, raffle: raffle, expected: recorder.entries)
        await admin.transport.close()
        try common.finish(result)
        if result.lost != 0 || recorder.notAccepted > 0 { throw ExitCode(1) }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Calibration: closed-loop GETs against any HTTP/2 server (e.g. h2o), beside h2load's rate on the same server.")
    @Option(help: "The server, HOST:PORT.") var target: String
    @Option(help: "Path to GET.") var path = "/"
    @Option(help: "Requests in all.") var requests = 1_000_000
    @Option(help: "Connections.") var connections = 16
    @Option(help: "Streams in flight per connection.") var inFlight = 32
    @Flag(help: "Also run h2load with the same shape and compare (needs h2load).") var compare = false

    func run() async throws {
        guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
            throw ValidationError("--target: expected HOST:PORT")
        }
        let host = String(target[..<colon])
        let recorder = Recorder()
        let start = ContinuousClock.now
        try await runH2Load(
            host: host, port: port, plan: H2LoadPlan(request: .get(path: path), connections: connections, inFlight: inFlight, requests: requests),
            recorder: recorder, userBase: 0)
        let seconds = (ContinuousClock.now - start).seconds
        let ours = Double(recorder.requests) / seconds
        print(String(format: "raffle-bench get: %d requests in %.2f s = %.0f req/s (%d errors), -c%d -m%d, one core", recorder.requests, seconds, ours, recorder.errors, connections, inFlight))
        guard compare else { return }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["h2load", "-c\(connections)", "-m\(inFlight)", "-t1", "-n", "\(requests)", "http://\(target)\(path)"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.contains("finished in") }),
            let rate = Double(line.split(separator: " ").dropFirst(3).first?.replacingOccurrences(of: ",", with: "") ?? "")
        else {
            throw BenchError("could not read h2load's rate: \(text.suffix(300))")
        }
        let ratio = ours / rate
        print(String(format: "h2load get:      %.0f req/s on the same server; raffle-bench / h2load = %.2f — %@", rate, ratio,
                     ratio >= 0.9 ? "within 10%: the generator is calibrated" : "MORE THAN 10% SLOWER: raffle-bench is the bottleneck here"))
    }
}

// MARK: - smoke

struct Smoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A tiny run of each scenario and transport that checks acknowledged = stored (for CI, not for speed).")
    @Option(help: "The raffled executable (default: ../.build/release/raffled, then debug).") var raffled: String?
    @Option(help: "Directory for the JSON and SVG outputs (default: a temporary one).") var out: String?

    func run() async throws {
        let dir = out ?? FileManager.default.temporaryDirectory.appendingPathComponent("raffle-bench-smoke-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var failures: [String] = []
        func common(_ transport: TransportKind, _ name: String) throws -> CommonOptions {
            var args = ["--transport", transport.rawValue, "--json", "\(dir)/\(name).json", "--svg", "\(dir)/\(name).svg"]
            if let raffled { args += ["--raffled", raffled] }
            return try CommonOptions.parse(args)
        }
        let runs: [(String, () async throws -> RunResult)] = [
            ("drop-http2", { try await runDrop(common: try common(.http2, "drop-http2"), users: 3_000, within: 1, connections: 8) }),
            ("drop-udp", { try await runDrop(common: try common(.udp, "drop-udp"), users: 500, within: 1, connections: 4) }),
            ("bulk-http2", { try await runBulk(common: try common(.http2, "bulk-http2"), partners: 2, batch: 500, window: 4, entries: 10_000) }),
            ("bulk-tcp", { try await runBulk(common: try common(.tcp, "bulk-tcp"), partners: 2, batch: 500, window: 4, entries: 10_000) }),
            ("bulk-udp", { try await runBulk(common: try common(.udp, "bulk-udp"), partners: 1, batch: 500, window: 4, entries: 2_000) }),
            ("mobile-http2", { try await runMobile(common: try common(.http2, "mobile-http2"), rate: 500, seconds: 2, connections: 8) }),
        ]
        for (name, run) in runs {
            let result = try await run()
            try common(.http2, name).finish(result)
            let ok = result.lost == 0 && result.entriesStored == result.entriesAcknowledged && result.entriesAcknowledged > 0
            print("smoke \(name): \(ok ? "ok" : "FAILED") — acknowledged \(result.entriesAcknowledged), stored \(result.entriesStored.map(String.init) ?? "?")")
            if !ok { failures.append(name) }
        }
        if !failures.isEmpty {
            print("smoke: FAILED: \(failures.joined(separator: ", "))")
            throw ExitCode(1)
        }
        print("smoke: every scenario stored exactly what it acknowledged (outputs in \(dir))")
    }
}

/// What every scenario starts with: the server under test, an admin client on HTTP/2, a fresh
/// raffle, and the recorder with its progress line.
final class ScenarioRun: Sendable {
    let target: Target
    let admin: RaffleClient
    let raffle: UInt64
    let recorder = Recorder()
    private let finished = Atomic<Bool>(false)
    private let progress = Mutex<Task<Void, Never>?>(nil)

    private init(target: Target, admin: RaffleClient, raffle: UInt64) {
        self.target = target
        self.admin = admin
        self.raffle = raffle
    }

    /// Starts (or finds) the server, creates the raffle `name`, starts the progress line.
    static func start(_ common: CommonOptions, _ name: String, total: Int?) async throws -> ScenarioRun {
        let target = try common.start()
        let admin = RaffleClient(transport: HTTP2Transport(host: target.host, port: target.port), configuration: .init(adminKey: target.adminKey))
        let raffle: UInt64
        do { raffle = try await admin.createRaffle(title: name, duration: .seconds(86_400), expectedEntries: total.map { min($0, 100_000_000) }).id } catch {
            target.stop()
            throw error
        }
        let run = ScenarioRun(target: target, admin: admin, raffle: raffle)
        let task = progressLoop(run.recorder, label: name, total: total) { [weak run] in run?.finished.load(ordering: .relaxed) ?? true }
        run.progress.withLock { $0 = task }
        return run
    }

    /// Stops the progress line and closes the last second of the series.
    func stopProgress() {
        finished.store(true, ordering: .relaxed)
        progress.withLock { $0 }?.cancel()
        _ = recorder.tick()
    }
}

/// A counter shared with tasks.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// Starts `count` tasks on an open-loop schedule — task `i` at `start + i·interval`, whatever the
/// earlier ones are doing — and waits for all. `make(i, scheduledTime)` runs on the scheduling task
/// (it may keep state) and returns the work to start.
///
/// Unstructured tasks and a countdown, not a task group: a group keeps its live children in a list
/// that each finishing child is unlinked from by a scan, which with tens of thousands of users in
/// flight took half the generator's CPU (measured with perf: `TaskGroup::removeChildTask`).
func openLoop(
    count: Int, interval: Double, start: ContinuousClock.Instant,
    _ make: (Int, ContinuousClock.Instant) -> @Sendable () async -> Void
) async {
    guard count > 0 else { return }
    let countdown = Countdown(count)
    var next = 0
    while next < count {
        let due = min(count, Int((ContinuousClock.now - start).seconds / max(interval, 1e-12)) + 1)
        while next < due {
            let work = make(next, start + .seconds(Double(next) * interval))
            Task {
                await work()
                countdown.finishOne()
            }
            next += 1
        }
        if next < count { try? await Task.sleep(for: .milliseconds(1)) }
    }
    await countdown.wait()
}

/// Counts tasks down to zero and wakes the one waiter then.
final class Countdown: Sendable {
    private let state: Mutex<(remaining: Int, waiter: CheckedContinuation<Void, Never>?)>

    init(_ count: Int) { state = Mutex((count, nil)) }

    func finishOne() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.remaining -= 1
            guard s.remaining == 0 else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.remaining == 0 { return true }
                s.waiter = c
                return false
            }
            if now { c.resume() }
        }
    }
}

/// When each batch (by its first user) was handed to a bulk stream.
final class SentTimes: Sendable {
    let times = Mutex<[UInt64: ContinuousClock.Instant]>([:])
}
