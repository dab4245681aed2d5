import Foundation
import NIOCore
import RaffleCore
import RaffleHTTP2
import RaffleHTTP2Client
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs the real `raffled` executable as a child process.
///
/// `@unchecked Sendable`: all stored properties are `let`, set in `init`; after that only `kill(2)`
/// and `waitUntilExit` are called, which are safe from any thread.
final class RaffledProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    /// What it printed at start (where it listens, which transports are on).
    let banner: String
    /// Its standard error (logs), a file beside the data directory.
    let errorsPath: String
    private let output = Pipe()

    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("raffled")
    }

    init(data: String, extra: [String] = [], environment: [String: String] = [:]) throws {
        process.executableURL = Self.executable
        process.arguments = ["--port", "0", "--data", data, "--loops", "2", "--log-level", "warning"] + extra
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardOutput = output
        // Its errors go to a file beside the data directory, for the message if it does not start.
        let errors = data + ".stderr"
        errorsPath = errors
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: errors) ?? FileHandle.nullDevice
        try process.run()
        // The first line says where it listens: "raffled listening on http://127.0.0.1:PORT ...".
        var text = ""
        let handle = output.fileHandleForReading
        let deadline = Date().addingTimeInterval(20)
        while text.split(separator: "\n").count < 2 && Date() < deadline {
            let data = handle.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        guard let range = text.range(of: "127.0.0.1:"), let port = Int(text[range.upperBound...].prefix { $0.isNumber }) else {
            process.terminate()
            process.waitUntilExit()
            let why = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
            throw HTTP2ClientError("raffled did not start: \(text)\(why)")
        }
        self.port = port
        banner = text
        // With no --admin-keys, raffled makes DATA/admin.key at first start and reuses it after.
        adminKey = ((try? String(contentsOfFile: data + "/admin.key", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts raffled on a thread of its own: waiting for its first line must not hold one of the
    /// few threads every test's tasks share.
    static func launch(data: String, extra: [String] = [], environment: [String: String] = [:]) async throws -> RaffledProcess {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try RaffledProcess(data: data, extra: extra, environment: environment) }) }.start()
        }
    }

    /// Starts raffled on a free main port (raw TCP and UDP take the two after it), choosing again
    /// when another process took one of them first: ports are chosen before raffled binds them, so
    /// tests running in parallel can race for one.
    static func launch(data: String, onFreePort extra: @Sendable (Int) -> [String]) async throws -> RaffledProcess {
        var lastError: (any Error)?
        for _ in 0..<3 {
            let port = try freePort(following: 2)
            do {
                return try await launch(data: data, extra: extra(port))
            } catch {
                guard "\(error)".contains("cannot listen") else { throw error }
                lastError = error
            }
        }
        throw lastError ?? HTTP2ClientError("raffled did not start")
    }

    /// The admin key raffled made in its data directory.
    let adminKey: String

    /// The `authorization` header field carrying it.
    var adminHeader: (String, String) { ("authorization", "Bearer " + adminKey) }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func terminate() -> Int32 {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        return process.terminationStatus
    }
}

extension HTTP2Client {
    /// Creates a raffle from a JSON body and returns it.
    func createRaffle(_ json: String, on server: RaffledProcess) async throws -> RaffleInfo {
        let response = try await request(method: "POST", path: "/v1/raffles", headers: [server.adminHeader], body: Array(json.utf8))
        return try JSONDecoder().decode(RaffleInfo.self, from: Data(response.body.readableBytesView))
    }

    /// POSTs frames to /v1/entries and returns the reply frames.
    func postEntries(_ body: [UInt8]) async throws -> [Frame] {
        // Bounded: a request the server never answers fails the test instead of hanging it.
        let response = try await request(
            method: "POST", path: Wire.entriesPath, headers: [("content-type", Wire.contentType)], body: body, timeout: .seconds(30))
        return try decodeFrames(Array(buffer: response.body))
    }
}

/// Users whose entries were acknowledged, collected from many tasks.
final class Acked: Sendable {
    let set = Mutex<Set<UInt64>>([])

    /// One writer: `rounds` batches of `batch` fresh users (its own range), until one fails (the
    /// server was killed); the acknowledged ones are added to `set`.
    func submitFreshUsers(_ client: HTTP2Client, raffle: UInt64, writer: Int, rounds: Int, batch: Int) async {
        for round in 0..<rounds {
            let users = (0..<batch).map { UInt64(writer * 10_000_000 + round * batch + $0 + 1) }
            guard let frames = try? await client.postEntries(batchFrame(raffle: raffle, users: users, requestID: UInt64(round))),
                let outcomes = frames.first?.outcomes
            else { return }
            let entered = zip(users, outcomes).filter { $0.1.isEntered }.map(\.0)
            set.withLock { $0.formUnion(entered) }
        }
    }
}

/// What `raffled backup` said, handed from the task that ran it.
final class BackupOutcome: Sendable {
    let result = Mutex<CommandResult?>(nil)
}

@Suite("The raffled process: crash recovery and graceful stop", .serialized, .timeLimit(.minutes(2)))
struct CrashRecoveryTests {
    /// With the default checkpoints (none in so little log) and with a checkpoint every MiB on 1 MiB
    /// segments (checkpoints and segment retirement while the load runs, and the kill).
    @Test(arguments: [[], ["--segment-mb", "1", "--checkpoint-mb", "1"]])
    func everyAcknowledgedEntrySurvivesKill9ExactlyOnce(options: [String]) async throws {
        #expect(FileManager.default.isExecutableFile(atPath: RaffledProcess.executable.path), "build raffled first")
        let dir = TempDir()
        let first = try RaffledProcess(data: dir.path, extra: options)
        let client = try await HTTP2Client.connect(host: "127.0.0.1", port: first.port, group: ServerFixture.group)
        let raffle = try await client.createRaffle(#"{"title":"Crash","durationSeconds":600}"#, on: first).id
        let acked = Acked()

        // Eight writers submit batches of fresh users; the process is killed while they run.
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask { await acked.submitFreshUsers(client, raffle: raffle, writer: writer, rounds: 10_000, batch: 20) }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(700))
                first.kill9()
            }
        }
        await client.close()
        let ackedUsers = acked.set.withLock { $0 }
        #expect(ackedUsers.count > 100, "the load ran before the kill (\(ackedUsers.count) acked)")

        let second = try RaffledProcess(data: dir.path, extra: options)
        let client2 = try await HTTP2Client.connect(host: "127.0.0.1", port: second.port, group: ServerFixture.group)
        let export = try await client2.request(method: "GET", path: "/v1/raffles/\(raffle)/export?format=csv", headers: [second.adminHeader])
        let entries = try Export.parse(String(buffer: export.body))
        let stored = Set(entries.map(\.userID))
        #expect(stored.count == entries.count, "no entry is stored twice")
        #expect(ackedUsers.isSubset(of: stored), "lost \(ackedUsers.subtracting(stored).count) acknowledged entries")
        // Re-sending after the restart is harmless.
        let sample = Array(ackedUsers.prefix(50))
        let resend = try await client2.postEntries(batchFrame(raffle: raffle, users: sample, requestID: 1))
        #expect(resend.first?.outcomes?.allSatisfy { $0 == .alreadyEntered } == true)
        await client2.close()
        #expect(second.terminate() == 0)
    }

    /// `raffled backup` while the server takes entries and writes checkpoints (every MiB): the copy
    /// holds every entry acknowledged before it began, nothing the server does not hold, and serves.
    @Test func backupWhileServingIsAConsistentCopy() async throws {
        let dir = TempDir()
        let options = ["--segment-mb", "1", "--checkpoint-mb", "1", "--global-rate", "0", "--anonymous-rate", "1000000000"]
        let server = try RaffledProcess(data: dir.path + "/data", extra: options)
        let client = try await HTTP2Client.connect(host: "127.0.0.1", port: server.port, group: ServerFixture.group)
        let raffle = try await client.createRaffle(#"{"title":"Backup","durationSeconds":600}"#, on: server).id
        let acked = Acked()
        let ackedBeforeBackup = Acked()
        let backup = BackupOutcome()
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask { await acked.submitFreshUsers(client, raffle: raffle, writer: writer, rounds: 400, batch: 200) }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(600))
                ackedBeforeBackup.set.withLock { $0 = acked.set.withLock { $0 } }
                let result = await offPool {
                    try? runCommandBlocking(
                        RaffledProcess.executable.path, ["backup", "--data", dir.path + "/data", "--to", dir.path + "/copy"], timeout: 60)
                }
                backup.result.withLock { $0 = result }
            }
        }
        let result = try #require(backup.result.withLock { $0 })
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("verified: 1 raffle(s)"), "\(result.stdout)")
        let served = try await client.request(method: "GET", path: "/v1/raffles/\(raffle)/export?format=csv", headers: [server.adminHeader])
        let all = Set(try Export.parse(String(buffer: served.body)).map(\.userID))
        let metrics = String(buffer: try await client.request(method: "GET", path: "/metrics").body)
        await client.close()
        #expect(server.terminate() == 0)
        #expect(all.count == 320_000)
        let checkpoints = metrics.split(separator: "\n").first { $0.hasPrefix("raffled_checkpoints_total ") }.flatMap { Double($0.split(separator: " ")[1]) }
        #expect((checkpoints ?? 0) >= 1, "checkpoints ran during the load")

        let restored = try RaffledProcess(data: dir.path + "/copy")
        let client2 = try await HTTP2Client.connect(host: "127.0.0.1", port: restored.port, group: ServerFixture.group)
        let export = try await client2.request(method: "GET", path: "/v1/raffles/\(raffle)/export?format=csv", headers: [restored.adminHeader])
        let copied = Set(try Export.parse(String(buffer: export.body)).map(\.userID))
        let before = ackedBeforeBackup.set.withLock { $0 }
        #expect(before.count > 0 && before.isSubset(of: copied), "\(before.subtracting(copied).count) entries acknowledged before the backup are missing")
        #expect(copied.isSubset(of: all), "the copy holds nothing the server does not")
        await client2.close()
        #expect(restored.terminate() == 0)
    }

    @Test func sigtermFinishesInFlightWorkAndExitsZero() async throws {
        let dir = TempDir()
        let first = try RaffledProcess(data: dir.path)
        let client = try await HTTP2Client.connect(host: "127.0.0.1", port: first.port, group: ServerFixture.group)
        let raffle = try await client.createRaffle(#"{"title":"Stop","durationSeconds":600}"#, on: first).id
        let reply = try await client.postEntries(batchFrame(raffle: raffle, users: 1...500, requestID: 1))
        #expect(reply.first?.outcomes?.count == 500)
        #expect(first.terminate() == 0, "SIGTERM: graceful stop, exit 0")
        await client.close()
        let second = try RaffledProcess(data: dir.path)
        let client2 = try await HTTP2Client.connect(host: "127.0.0.1", port: second.port, group: ServerFixture.group)
        let info = try JSONDecoder().decode(
            RaffleInfo.self, from: Data(try await client2.request(method: "GET", path: "/v1/raffles/\(raffle)").body.readableBytesView))
        #expect(info.entries == 500)
        await client2.close()
        #expect(second.terminate() == 0)
    }

    @Test func verifyRecomputesThePublishedDrawAndCatchesATamperedExport() async throws {
        let dir = TempDir()
        let server = try RaffledProcess(data: dir.path)
        let client = try await HTTP2Client.connect(host: "127.0.0.1", port: server.port, group: ServerFixture.group)
        let info = try await client.createRaffle(#"{"title":"Verify","durationSeconds":600,"winners":4,"maxTicketsPerUser":3}"#, on: server)
        _ = try await client.postEntries(batchFrame(raffle: info.id, users: (1...300).map { $0 * 31 }, requestID: 1, tickets: 2))
        _ = try await client.request(method: "POST", path: "/v1/raffles/\(info.id)/close", headers: [server.adminHeader])
        let draw = try JSONDecoder().decode(
            DrawResult.self, from: Data(try await client.request(method: "GET", path: "/v1/raffles/\(info.id)/winners").body.readableBytesView))
        let export = try await client.request(method: "GET", path: "/v1/raffles/\(info.id)/export?format=csv", headers: [server.adminHeader])
        let file = dir.path + "/export.csv"
        try Data(export.body.readableBytesView).write(to: URL(fileURLWithPath: file))
        await client.close()
        #expect(server.terminate() == 0)

        func verify(_ exportPath: String) throws -> (Int32, String) {
            let p = Process()
            let out = Pipe()
            p.executableURL = RaffledProcess.executable
            p.arguments = [
                "verify", "--export", exportPath, "--seed", draw.seed, "--winners", "4", "--commitment", info.seedCommitment,
                "--hash", draw.entryListHash, "--expect", draw.winners.map(String.init).joined(separator: ","),
            ]
            p.standardOutput = out
            try p.run()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
        let (status, text) = try verify(file)
        #expect(status == 0, "\(text)")
        #expect(text.contains("winners: matches"))
        // Drop one entry from the export: the hash (and likely the winners) no longer match.
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        try (lines.dropLast().joined(separator: "\n") + "\n").write(toFile: dir.path + "/tampered.csv", atomically: true, encoding: .utf8)
        let (tamperedStatus, tamperedText) = try verify(dir.path + "/tampered.csv")
        #expect(tamperedStatus == 1)
        #expect(tamperedText.contains("DOES NOT MATCH"))
    }
}
