import Foundation
import Logging
import NIOCore
import NIOPosix
import RaffleCore
import RaffleHTTP2
import RaffleHTTP2Client
import RaffleLedger
import RaffleStorage
import RaffleServer
import RaffleTestSupport
import RaffleWire

extension ServerConfiguration {
    /// A test server's configuration: 127.0.0.1, a free port, two event loops, `ingestBufferBytes` of
    /// ingest buffers, the test admin key.
    static func forTests(ingestBufferBytes: Int = 1 << 20) -> ServerConfiguration {
        var config = ServerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.eventLoops = 2
        config.ingestBufferBytes = ingestBufferBytes
        config.adminKeys = AdminKeys([.init(name: "test", key: testAdminKey)])
        return config
    }
}

extension Logger {
    /// A logger that says only what is at `level` or above.
    static func quiet(_ label: String, level: Logger.Level = .critical) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

/// A real raffled server on 127.0.0.1 (port 0) with its own data directory, and a client.
struct ServerFixture {
    let server: RaffleServer
    let dir: TempDir
    let client: HTTP2Client

    static let group = MultiThreadedEventLoopGroup.singleton

    /// `files`: the log's file system (a `FaultyFileSystem` to inject storage faults).
    static func start(
        durability: Durability = .fsync, files: (any LogFileSystem)? = nil, logger given: Logger? = nil,
        _ configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws -> ServerFixture {
        let dir = TempDir()
        var config = ServerConfiguration.forTests(ingestBufferBytes: 4 << 20)
        configure(&config)
        // Fault tests provoke the storage errors the server logs loudly: keep the test output clean.
        let logger =
            given ?? (files == nil ? Logger.quiet("raffled-test", level: .warning) : Logger(label: "raffled-test") { _ in SwiftLogNoOpLogHandler() })
        let server =
            if let files {
                // Injected faults meet every commit as an append (no zeros written ahead: a full disk
                // stalls at once); the ledger's own tests cover the zeros with faults.
                try await RaffleServer.start(
                    configuration: config, ledger: try LocalLedger(directory: dir.path, durability: durability, logZeroFillBytes: 0, files: files), logger: logger)
            } else {
                try await RaffleServer.start(
                    configuration: config, local: LocalLedgerConfiguration(directory: dir.path, durability: durability), logger: logger)
            }
        let client = try await HTTP2Client.connect(host: "127.0.0.1", port: server.port, group: group)
        return ServerFixture(server: server, dir: dir, client: client)
    }

    func stop() async {
        await client.close()
        await server.shutdown()
    }

    /// Creates an open raffle and returns its id.
    func createRaffle(winners: Int = 3, maxTickets: UInt32 = 5, seconds: Int = 600) async throws -> UInt64 {
        let body = #"{"title":"Drop","durationSeconds":\#(seconds),"winners":\#(winners),"maxTicketsPerUser":\#(maxTickets)}"#
        let response = try await admin("POST", "/v1/raffles", body: Array(body.utf8))
        guard response.status == 201 else { throw HTTP2ClientError("create: \(response.status) \(String(buffer: response.body))") }
        return try JSONDecoder().decode(RaffleInfo.self, from: Data(response.body.readableBytesView)).id
    }

    /// POSTs `body` to /v1/entries and returns the status and the reply frames.
    func post(_ body: [UInt8], contentType: String = Wire.contentType, on client: HTTP2Client? = nil) async throws -> (Int, [Frame], HTTP2Response) {
        let response = try await (client ?? self.client).request(
            method: "POST", path: Wire.entriesPath, headers: [("content-type", contentType)], body: body)
        return (response.status, try decodeFrames(Array(buffer: response.body)), response)
    }

    /// An admin call: the request with the test admin key.
    func admin(_ method: String, _ path: String, body: [UInt8]? = nil) async throws -> HTTP2Response {
        try await client.request(method: method, path: path, headers: [testAdminHeader], body: body)
    }

    func getJSON<T: Decodable>(_ path: String, as: T.Type) async throws -> T {
        let response = try await admin("GET", path)
        guard response.status == 200 else { throw HTTP2ClientError("GET \(path): \(response.status) \(String(buffer: response.body))") }
        return try JSONDecoder().decode(T.self, from: Data(response.body.readableBytesView))
    }
}

extension Frame {
    /// The outcomes if this is a batch ack.
    var outcomes: [EntryOutcome]? {
        if case .batchAck(_, let o) = body { return o }
        return nil
    }

    /// The error code if this is an error frame.
    var errorCode: ProtocolErrorCode? {
        if case .error(let code, _) = body { return code }
        return nil
    }
}
