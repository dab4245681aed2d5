import Foundation
public import RaffleWire

/// A fresh directory under the system temp dir, removed when the value is released.
public final class TempDir: Sendable {
    /// Its path.
    public let path: String

    public init() {
        path = NSTemporaryDirectory() + "raffled-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The names of the files in it, sorted.
    public func files() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}

/// Encodes an entry-batch frame.
public func batchFrame(raffle: UInt64, users: some Sequence<UInt64>, requestID: UInt64, tickets: UInt32 = 1) -> [UInt8] {
    let entries = users.map { Entry(userID: $0, tickets: tickets) }
    return (try? FrameEncoder.encode(Frame(requestID: requestID, body: .entryBatch(raffleID: raffle, entries: entries)))) ?? []
}

/// Decodes every frame in `bytes` (as a client receives them).
public func decodeFrames(_ bytes: [UInt8]) throws -> [Frame] {
    try FrameDecoder(receiver: .client).decodeAll(bytes)
}

/// A seeded, reproducible generator (SplitMix64).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The admin key the test servers are configured with.
public let testAdminKey = "raffled-test-admin-key-0123456789"

/// The `authorization` header field that carries `testAdminKey`.
public let testAdminHeader = ("authorization", "Bearer " + testAdminKey)

/// A finished child process: its exit status and everything it wrote.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `executable` (a path, or a name looked up in PATH) with `arguments` and optional standard
/// input, reading both pipes to the end before waiting so a chatty child never blocks; a child
/// still running after `timeout` seconds is killed (status then says so).
///
/// The waiting happens on a thread of its own, not on Swift concurrency's few cooperative threads:
/// blocking those stalls every other test running at the same time.
public func runCommand(
    _ executable: String, _ arguments: [String], stdin: String? = nil, environment: [String: String]? = nil, timeout: Double = 60
) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(
                with: Result { try runCommandBlocking(executable, arguments, stdin: stdin, environment: environment, timeout: timeout) })
        }
        thread.start()
    }
}

/// `runCommand`, blocking the calling thread (for callers outside Swift concurrency).
public func runCommandBlocking(
    _ executable: String, _ arguments: [String], stdin: String? = nil, environment: [String: String]? = nil, timeout: Double = 60
) throws -> CommandResult {
    let p = Process()
    if executable.contains("/") {
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
    } else {
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [executable] + arguments
    }
    if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    p.standardInput = stdin == nil ? FileHandle.nullDevice : input
    try p.run()
    if let stdin {
        input.fileHandleForWriting.write(Data(stdin.utf8))
        try input.fileHandleForWriting.close()
    }
    let killer = DispatchWorkItem { if p.isRunning { p.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    let errData = PipeData()
    let reader = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
    reader.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    killer.cancel()
    while !errData.done { usleep(1_000) }
    return CommandResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData.value, as: UTF8.self))
}

/// A Data handed from a reader thread.
///
/// `@unchecked Sendable`: `value` is written once by the reader thread before `done` is set under the
/// lock, and read only after `done` is seen under the same lock.
final class PipeData: @unchecked Sendable {
    private let lock = NSLock()
    private var _value = Data()
    private var _done = false
    func set(_ d: Data) { lock.withLock { _value = d; _done = true } }
    var done: Bool { lock.withLock { _done } }
    var value: Data { lock.withLock { _value } }
}

/// The repository's root (where Package.swift is), found from this source file.
public let repositoryRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Certificates made by `scripts/dev-cert` in a temporary directory: `ca.pem`, `server.pem`
/// (chain), `server.key`. `expired`: a server certificate that expired yesterday.
public func makeDevCertificates(in dir: String, expired: Bool = false) async throws {
    let result = try await runCommand(repositoryRoot + "/scripts/dev-cert", [dir], environment: ["DEV_CERT_EXPIRED": expired ? "1" : "0"])
    guard result.status == 0 else { throw TestSupportError("scripts/dev-cert failed: \(result.stderr)") }
}

/// A test helper could not do its job.
public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A private PostgreSQL cluster for one test (`scripts/pg-cluster`): its own directory, a free port on
/// 127.0.0.1, trust authentication for `postgres`. Use `withPostgres`, which always stops it.
public final class PostgresCluster: Sendable {
    /// Where its data, socket and log live.
    public let dir: TempDir
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    public let url: String

    private init(dir: TempDir, url: String) {
        self.dir = dir
        self.url = url
    }

    /// Whether PostgreSQL's server programs are installed (Debian: `apt-get install postgresql`).
    public static var isInstalled: Bool {
        let lib = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: lib)) ?? []
        return versions.contains { FileManager.default.isExecutableFile(atPath: "\(lib)/\($0)/bin/pg_ctl") }
    }

    /// initdb and start (~2 s).
    public static func start() async throws -> PostgresCluster {
        guard isInstalled else {
            throw TestSupportError("PostgreSQL is not installed: scripts/setup --tests installs it (apt-get install -y postgresql)")
        }
        let dir = TempDir()
        let result = try await runCommand(repositoryRoot + "/scripts/pg-cluster", ["start", dir.path], timeout: 120)
        guard result.status == 0 else { throw TestSupportError("scripts/pg-cluster start failed: \(result.stderr)") }
        return PostgresCluster(dir: dir, url: result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Stops it (fast shutdown: sessions are cut) and starts it again on the same port.
    public func restart(downFor pause: Duration = .zero) async throws {
        try await stop()
        if pause > .zero { try await Task.sleep(for: pause) }
        let result = try await runCommand(repositoryRoot + "/scripts/pg-cluster", ["start", dir.path, port], timeout: 120)
        guard result.status == 0 else { throw TestSupportError("scripts/pg-cluster start failed: \(result.stderr)") }
    }

    public func stop() async throws {
        _ = try await runCommand(repositoryRoot + "/scripts/pg-cluster", ["stop", dir.path], timeout: 60)
    }

    /// The port it listens on.
    public var port: String { String(url.split(separator: ":").last?.split(separator: "/").first ?? "") }

    /// Runs SQL with psql and returns its unaligned, tuples-only output.
    public func psql(_ sql: String) async throws -> String {
        let result = try await runCommand("psql", ["-X", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql], timeout: 60)
        guard result.status == 0 else { throw TestSupportError("psql failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Runs `body` with a fresh private PostgreSQL cluster, stopped afterwards whatever happens.
public func withPostgres<T: Sendable>(_ body: (PostgresCluster) async throws -> T) async throws -> T {
    let cluster = try await PostgresCluster.start()
    do {
        let value = try await body(cluster)
        try? await cluster.stop()
        return value
    } catch {
        try? await cluster.stop()
        throw error
    }
}

/// A TCP port on 127.0.0.1 nobody listens on now (bound without SO_REUSEPORT, then closed), with
/// `following` more free ports after it (raffled's raw-TCP and UDP ports are port+1 and port+2).
public func freePort(following: Int = 0) throws -> Int {
    for _ in 0..<50 {
        let candidate = try bindAndRelease(0)
        if (0..<max(following, 0)).allSatisfy({ (try? bindAndRelease(candidate + 1 + $0)) != nil }) { return candidate }
    }
    throw TestSupportError("no free port run of \(following + 1) found")
}

private func bindAndRelease(_ port: Int) throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestSupportError("socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw TestSupportError("port \(port) is taken") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Runs blocking work (a socket read with a deadline, waiting for a process) on a thread of its own:
/// the test tasks share a cooperative pool as wide as the machine has cores (2 here), and a server
/// answer that runs in a task (an admin call on a ledger that may wait) must not queue behind it.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

/// A fault to inject: a TCP port on 127.0.0.1 that completes connections (the kernel's backlog)
/// and never reads or answers — a server that hangs. `close()` it when done.
public final class SilentListener: Sendable {
    public let port: Int
    private let fd: Int32

    public init() throws {
        #if canImport(Glibc)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
            let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 64) == 0 else {
            let code = POSIXErrorCode(rawValue: errno) ?? .EIO
            Foundation.close(fd)
            throw POSIXError(code)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Stops listening (pending connections are reset).
    public func close() { Foundation.close(fd) }
}
