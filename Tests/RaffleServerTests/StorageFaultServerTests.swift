import Foundation
import Logging
import Synchronization
import RaffleCore
import RaffleHTTP2Client
import RaffleServer
import RaffleStorage
import RaffleTestSupport
import RaffleWire
import Testing

/// What clients, probes and metrics see when the storage under a running server fails or fills up.
@Suite("Storage faults seen from outside", .timeLimit(.minutes(1)))
struct StorageFaultServerTests {
    func metrics(_ f: ServerFixture) async throws -> String {
        String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
    }

    func until(_ seconds: Double = 5, _ done: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
        while ContinuousClock.now < deadline {
            if try await done() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// A server on a file system with 100 bytes left, a raffle, and a batch taken that now waits for
    /// space (its ack comes once the disk has room again).
    func stalled() async throws -> (FaultyFileSystem, ServerFixture, UInt64, Task<(Int, [Frame], HTTP2Response), any Error>) {
        let files = FaultyFileSystem()
        let f = try await ServerFixture.start(files: files)
        let raffle = try await f.createRaffle()
        files.space = 100
        let waiting = Task { try await f.post(batchFrame(raffle: raffle, users: 1...20, requestID: 1)) }
        return (files, f, raffle, waiting)
    }

    /// A request the server does not answer in time fails with "no response within …" (the
    /// connection's deadline sweep, not a timer per request); its stream is cancelled and the same
    /// connection goes on serving.
    @Test func anUnansweredRequestTimesOutAndTheConnectionGoesOn() async throws {
        let files = FaultyFileSystem()
        let f = try await ServerFixture.start(files: files)
        let raffle = try await f.createRaffle()
        files.space = 100  // the next batch waits for room (the server does not know yet)
        do {
            _ = try await f.client.request(
                method: "POST", path: Wire.entriesPath, headers: [("content-type", Wire.contentType)],
                body: batchFrame(raffle: raffle, users: 500...520, requestID: 5), timeout: .milliseconds(100))
            Issue.record("a request the stalled server holds must time out")
        } catch let error as HTTP2ClientError {
            #expect(error.message.hasPrefix("no response within"), "\(error)")
        }
        #expect(try await f.client.request(method: "GET", path: "/healthz").status != 0, "the connection still serves after the cancel")
        files.space = nil
        #expect(try await until { try await f.client.request(method: "GET", path: "/readyz").status == 200 })
        #expect(f.client.isActive)
        await f.stop()
    }

    @Test func aFullDiskRefusesEntriesUntilSpaceReturns() async throws {
        let (files, f, raffle, waiting) = try await stalled()
        #expect(try await until { try await f.client.request(method: "GET", path: "/readyz").status == 503 })
        let ready = try await f.client.request(method: "GET", path: "/readyz")
        #expect(String(buffer: ready.body).contains("stalled"))
        #expect(try await metrics(f).contains("raffled_storage_stalled 1"))
        let (status, frames, response) = try await f.post(batchFrame(raffle: raffle, users: 100...101, requestID: 2))
        #expect(status == 503 && frames.first?.errorCode == .unavailable, "new entries: UNAVAILABLE while the disk is full")
        #expect(response.header("retry-after") == "1")
        files.space = nil
        let (firstStatus, firstFrames, _) = try await waiting.value
        #expect(firstStatus == 200 && firstFrames.first?.outcomes?.count == 20, "the waiting batch is acknowledged once written")
        #expect(try await until { try await f.client.request(method: "GET", path: "/readyz").status == 200 })
        #expect(try await metrics(f).contains("raffled_storage_stalled 0"))
        await f.stop()
    }

    /// The same full disk over every other transport: HTTP/1.1 (503, retry-after), raw TCP and UDP
    /// (an UNAVAILABLE error frame for the batch). Blocking socket reads run off the cooperative pool.
    @Test func aFullDiskIsUnavailableOverHTTP1RawTCPAndUDP() async throws {
        let (files, f, raffle, waiting) = try await stalled()
        #expect(try await until { try await f.client.request(method: "GET", path: "/readyz").status == 503 })
        let (port, tcpPort, udpPort) = (f.server.port, try #require(f.server.tcpPort), try #require(f.server.udpPort))
        let batch = try checksummed(Frame(requestID: 9, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 500)])))
        let (h1, tcp, udp) = await offPool { () -> (HTTP1Response?, Frame?, Frame?) in
            let h = try? RawSocket(port: port)
            h?.send(http1("POST", Wire.entriesPath, headers: [framesType], body: batch))
            let h1 = h.flatMap { s in HTTP1Response.parseAll(s.readBytes(for: 5) { HTTP1Response.parseAll($0).count >= 1 }.bytes).first }
            let t = try? FrameSocket(port: tcpPort)
            t?.send(batch)
            let tcp = t?.read(frames: 1).frames.first
            let udp = (try? FrameDecoder(receiver: .client).decodeAll(DatagramSocket(port: udpPort).exchange(batch) ?? []))?.first
            return (h1, tcp, udp)
        }
        #expect(h1?.status == 503 && h1?.header("retry-after") == "1", "HTTP/1.1")
        #expect(try FrameDecoder(receiver: .client).decodeAll(h1?.body ?? []).first?.errorCode == .unavailable, "HTTP/1.1 body")
        #expect(tcp?.errorCode == .unavailable, "raw TCP: \(String(describing: tcp))")
        #expect(udp?.errorCode == .unavailable, "UDP: \(String(describing: udp))")
        files.space = nil
        #expect(try await waiting.value.0 == 200, "the batch taken before the stall is acknowledged once written")
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 20, "nothing refused was stored")
        await f.stop()
    }

    @Test func aFailedSyncFailsReadinessAndIsCounted() async throws {
        let files = FaultyFileSystem()
        let f = try await ServerFixture.start(files: files)
        let raffle = try await f.createRaffle()
        files.failSyncs()
        let (status, frames, _) = try await f.post(batchFrame(raffle: raffle, users: 1...5, requestID: 1))
        #expect(status == 503 && frames.first?.errorCode == .unavailable, "never acknowledged")
        let ready = try await f.client.request(method: "GET", path: "/readyz")
        #expect(ready.status == 503 && String(buffer: ready.body).contains("fdatasync"))
        let health = try await f.client.request(method: "GET", path: "/healthz")
        #expect(String(buffer: health.body).contains("failing"))
        #expect(try await metrics(f).contains("raffled_storage_failures_total 1"))
        await f.stop()
    }

    /// A failed log is said once, at `critical` — not once per refused batch.
    @Test func aStorageFailureIsLoggedOnceLoudly() async throws {
        let lines = CapturedLog()
        let files = FaultyFileSystem()
        let f = try await ServerFixture.start(files: files, logger: Logger(label: "raffled-test") { _ in CapturingLogHandler(lines) })
        let raffle = try await f.createRaffle()
        files.failSyncs()
        for id in UInt64(1)...5 { _ = try await f.post(batchFrame(raffle: raffle, users: (id * 10)...(id * 10 + 3), requestID: id)) }
        let failures = lines.all.filter { $0.message.contains("storage failed") }
        #expect(failures.count == 1 && failures.first?.level == .critical, "\(lines.all.map(\.message))")
        await f.stop()
    }
}

/// Log lines kept for a test to read.
final class CapturedLog: Sendable {
    private let lines = Mutex<[(level: Logger.Level, message: String)]>([])
    func add(_ level: Logger.Level, _ message: String) { lines.withLock { $0.append((level, message)) } }
    var all: [(level: Logger.Level, message: String)] { lines.withLock { $0 } }
}

struct CapturingLogHandler: LogHandler {
    let log: CapturedLog
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    init(_ log: CapturedLog) { self.log = log }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { log.add(event.level, "\(event.message)") }
}
