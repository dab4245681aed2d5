import Foundation
import Logging
import NIOCore
import NIOEmbedded
import RaffleAdmission
@testable import RaffleHTTP2
@testable import RaffleHTTP2Client
import RaffleLedger
import RaffleCore
@testable import RaffleServer
import RaffleTestSupport
import RaffleWire
import Synchronization
import Testing

/// The connection handler without sockets: an nghttp2 client session in one `EmbeddedChannel`,
/// the server handler in another, bytes carried between them by the test.
@Suite("H2ServerConnection in memory")
struct HandlerTests {
    final class Pair {
        let dir = TempDir()
        let ledger: LocalLedger
        let loop: LoopContext
        let server: EmbeddedChannel
        let client: EmbeddedChannel
        let clientHandler = HTTP2ClientHandler()

        init(startLog: Bool = true, segmentBytes: Int = 64 << 20, _ configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
            var config = ServerConfiguration()
            configure(&config)
            ledger = try LocalLedger(directory: dir.path, segmentBytes: segmentBytes, startLog: startLog)
            let metrics = ServerMetrics(durability: "fsync")
            server = EmbeddedChannel()
            let admission = AdmissionController(config.admission)
            loop = LoopContext(
                eventLoop: server.embeddedEventLoop, ledger: ledger, admission: admission, configuration: config, metrics: metrics, slotCount: 4)
            let admin = AdminAPI(
                ledger: ledger, admission: admission, metrics: metrics, durability: .fsync, now: { Int64(Date().timeIntervalSince1970 * 1000) },
                keys: AdminKeys([.init(name: "test", key: testAdminKey)]), state: ServerState())
            try server.pipeline.syncOperations.addHandler(H2ServerConnection(loop: loop, admin: admin, logger: Logger(label: "test")))
            client = EmbeddedChannel()
            try client.pipeline.syncOperations.addHandler(clientHandler)
            _ = try server.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
            _ = try client.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        /// Moves bytes both ways until neither side has anything to send; returns bytes carried.
        @discardableResult
        func pump() throws -> Int {
            var moved = 0
            while true {
                var progressed = false
                while let out = try client.readOutbound(as: ByteBuffer.self) {
                    moved += out.readableBytes
                    try server.writeInbound(out)
                    progressed = true
                }
                while let out = try server.readOutbound(as: ByteBuffer.self) {
                    moved += out.readableBytes
                    try client.writeInbound(out)
                    progressed = true
                }
                if !progressed { return moved }
            }
        }

        /// What the server's commit hop does in production: tell the loop the log caught up.
        func commit() {
            let point = CommitPoint(lsn: ledger.log.appendedLSN)
            while !ledger.isDurable(point) { usleep(100) }
            loop.committed(.success(point))
        }

        func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) -> EventLoopFuture<HTTP2Response> {
            let promise = client.eventLoop.makePromise(of: HTTP2Response.self)
            clientHandler.start(method: method, path: path, headers: headers, body: body, promise: promise)
            return promise.futureResult
        }

        func finish() {
            _ = try? server.finish()
            _ = try? client.finish()
            ledger.shutdown()
        }
    }

    @Test func ackIsHeldUntilTheLogCommits() throws {
        let pair = try Pair(startLog: false)
        defer { pair.finish() }
        let (info, _) = try pair.ledger.createRaffle(
            RaffleSpec(title: "t", opensAt: 0, closesAt: Int64.max / 2), now: Int64(Date().timeIntervalSince1970 * 1000)).get()
        let response = pair.request(
            "POST", Wire.entriesPath, headers: [("content-type", Wire.contentType)], body: batchFrame(raffle: info.id, users: [1, 2], requestID: 9))
        try pair.pump()
        let done = Mutex(false)
        response.whenComplete { _ in done.withLock { $0 = true } }
        #expect(!done.withLock { $0 }, "no response before the log reports the entries durable")
        pair.ledger.log.start()
        pair.commit()
        try pair.pump()
        let r = try response.wait()
        #expect(r.status == 200)
        let frames = try decodeFrames(Array(buffer: r.body))
        #expect(frames.first?.outcomes == [.accepted, .accepted] && frames.first?.requestID == 9)
    }

    @Test func aLogFailureTurnsPendingAcksIntoUnavailableErrors() throws {
        let pair = try Pair(segmentBytes: 64)
        defer { pair.finish() }
        let (info, created) = try pair.ledger.createRaffle(
            RaffleSpec(title: "t", opensAt: 0, closesAt: Int64.max / 2), now: Int64(Date().timeIntervalSince1970 * 1000)).get()
        while !pair.ledger.isDurable(created) { usleep(100) }
        // The log will need a second segment, whose name is already taken: the write fails.
        _ = FileManager.default.createFile(atPath: pair.dir.path + "/wal-00000002.log", contents: nil)
        let response = pair.request(
            "POST", Wire.entriesPath, headers: [("content-type", Wire.contentType)], body: batchFrame(raffle: info.id, users: [1], requestID: 4))
        try pair.pump()
        let deadline = Date().addingTimeInterval(10)
        while pair.ledger.failureReason == nil && Date() < deadline { usleep(100) }
        try #require(pair.ledger.failureReason != nil)
        pair.loop.committed(.failure(LedgerError(.unavailable, pair.ledger.failureReason ?? "")))
        try pair.pump()
        let r = try response.wait()
        #expect(r.status == 503)
        let frames = try decodeFrames(Array(buffer: r.body))
        #expect(frames.count == 1)
        #expect(frames.first?.errorCode == .unavailable && frames.first?.requestID == 4, "never an ack that is not durable")
        // Later batches are refused too: no retry-and-continue.
        let later = pair.request(
            "POST", Wire.entriesPath, headers: [("content-type", Wire.contentType)], body: batchFrame(raffle: info.id, users: [2], requestID: 5))
        try pair.pump()
        #expect(try decodeFrames(Array(buffer: try later.wait().body)).first?.errorCode == .unavailable)
        // Alive, saying the ledger failed; not ready. (Admin answers stay JSON: a failure does not
        // turn them into frames.)
        let health = pair.request("GET", "/healthz")
        let ready = pair.request("GET", "/readyz")
        try pair.pump()
        let h = try health.wait()
        #expect(h.status == 200 && String(buffer: h.body).contains(#""ledger":"failing""#))
        #expect(try ready.wait().status == 503)
    }

    /// An HTTP/2 session holds its delegate strongly (its callbacks borrow it without a retain each);
    /// the handlers break that cycle when their channel closes, so neither outlives its connection.
    @Test func bothHandlersAreFreedWhenTheirChannelsClose() throws {
        weak var server: H2ServerConnection?
        weak var client: HTTP2ClientHandler?
        try {
            let pair = try Pair()
            defer { pair.finish() }
            let (info, _) = try pair.ledger.createRaffle(
                RaffleSpec(title: "t", opensAt: 0, closesAt: Int64.max / 2), now: Int64(Date().timeIntervalSince1970 * 1000)).get()
            let response = pair.request(
                "POST", Wire.entriesPath, headers: [("content-type", Wire.contentType)], body: batchFrame(raffle: info.id, users: [1], requestID: 3))
            try pair.pump()
            pair.commit()
            try pair.pump()
            #expect(try response.wait().status == 200)
            server = try pair.server.pipeline.syncOperations.handler(type: H2ServerConnection.self)
            client = pair.clientHandler
            #expect(server != nil && client != nil)
        }()
        #expect(server == nil, "the server's connection handler outlived its channel")
        #expect(client == nil, "the client's connection handler outlived its channel")
    }

    /// The client reuses a finished request's exchange: the next reply carries nothing of the last
    /// one (status, header fields, body), and one object serves requests one after another.
    @Test func aReusedExchangeCarriesNothingOfTheLastReply() throws {
        let pair = try Pair()
        defer { pair.finish() }
        let metrics = pair.request("GET", "/metrics")
        try pair.pump()
        let first = try metrics.wait()
        #expect(first.status == 200 && first.body.readableBytes > 100)
        #expect(pair.clientHandler.spareExchangeCount == 1)
        let refused = pair.request("POST", Wire.entriesPath, headers: [("content-type", "text/plain")], body: [1, 2, 3])
        #expect(pair.clientHandler.spareExchangeCount == 0, "the spare exchange was not taken")
        try pair.pump()
        let second = try refused.wait()
        #expect(second.status == 415)
        #expect(second.header("content-type") == Wire.contentType)
        #expect(second.headers.filter { $0.name == "content-type" }.count == 1, "header fields of the previous reply were kept")
        let frames = try decodeFrames(Array(buffer: second.body))
        #expect(frames.count == 1 && frames.first?.errorCode == .badContentType, "the reply holds bytes of the previous one")
        #expect(pair.clientHandler.spareExchangeCount == 1)
        let health = pair.request("GET", "/healthz")
        try pair.pump()
        let third = try health.wait()
        #expect(third.status == 200 && !String(buffer: third.body).contains("raffled_"))
    }

    /// The queue callers append to hands its drained array back: the next burst reuses its storage,
    /// and nothing of the last batch stays in it.
    @Test func theRequestQueueReusesADrainedBatchesStorage() throws {
        let loop = EmbeddedEventLoop()
        let queue = RequestQueue()
        func request() -> PendingRequest {
            PendingRequest(head: HTTP2RequestHead(method: "GET", path: "/"), body: nil, deadline: nil, reply: .promise(loop.makePromise()))
        }
        #expect(queue.append(request()) == true)
        for _ in 0..<9 { #expect(queue.append(request()) == false) }
        let batch = queue.take()
        #expect(batch.count == 10)
        let capacity = batch.capacity
        for p in batch { if case .promise(let promise) = p.reply { promise.fail(HTTP2ClientError("test")) } }
        queue.recycle(consume batch)
        #expect(queue.append(request()) == true)
        let next = queue.take()
        #expect(next.count == 1)
        #expect(next.capacity >= capacity, "the drained batch's storage was not reused")
        for p in next { if case .promise(let promise) = p.reply { promise.fail(HTTP2ClientError("test")) } }
    }

    @Test func wrongContentTypeIsAnsweredWithoutTouchingTheLedger() throws {
        let pair = try Pair()
        defer { pair.finish() }
        let before = pair.ledger.log.appendedLSN
        let response = pair.request("POST", Wire.entriesPath, headers: [("content-type", "text/plain")], body: [1, 2, 3])
        try pair.pump()
        let r = try response.wait()
        #expect(r.status == 415)
        #expect(try decodeFrames(Array(buffer: r.body)).first?.errorCode == .badContentType)
        #expect(pair.ledger.log.appendedLSN == before)
    }

    @Test func adminReadAndMetricsInMemory() throws {
        let pair = try Pair()
        defer { pair.finish() }
        let health = pair.request("GET", "/healthz")
        try pair.pump()
        #expect(try health.wait().status == 200)
        let metrics = pair.request("GET", "/metrics")
        try pair.pump()
        #expect(String(buffer: try metrics.wait().body).contains("raffled_connections_open"))
    }
}
