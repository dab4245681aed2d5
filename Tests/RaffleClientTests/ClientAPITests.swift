import Foundation
import Logging
import RaffleClient
import RaffleAdmission
import RaffleClientHTTP2
import RaffleServer
import RaffleTestSupport
import Synchronization
import Testing

/// Log lines kept in memory, for asserting what the client logs.
final class CapturedLog: Sendable {
    let lines = Mutex<[String]>([])
    func handler(label: String) -> any LogHandler { Handler(log: self) }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let extra = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            log.lines.withLock { $0.append("\(event.level) \(event.message) \(extra)") }
        }
    }
}

@Suite("RaffleClient API: errors, cancellation, shutdown, logging", .timeLimit(.minutes(1)))
struct ClientAPITests {
    @Test func errorKindsCompareAndCarryTheirDetails() {
        let error = RaffleClientError(.server(.unknownRaffle), "UNKNOWN_RAFFLE: raffle 9 does not exist")
        #expect(error.kind == .server(.unknownRaffle))
        #expect(error.kind != .server(.unavailable))
        #expect(error.kind.serverCode == .unknownRaffle && error.kind.httpStatus == nil)
        #expect(RaffleClientError.Kind.http(401).httpStatus == 401)
        #expect(!error.isRetryable && RaffleClientError(.timedOut, "slow").isRetryable)
        let wrapped = RaffleClientError(.deadlineExceeded, "gave up", underlying: error)
        #expect((wrapped.underlying as? RaffleClientError)?.kind == .server(.unknownRaffle), "the underlying error is kept, not flattened")
        #expect(wrapped.description == "gave up (last failure: UNKNOWN_RAFFLE: raffle 9 does not exist)")
    }

    @Test func cancellingACallThrowsCancellationErrorNotADeadline() async throws {
        var config = RaffleClientConfiguration()
        config.deadline = .seconds(30)
        config.minimumRetriesPerSecond = 1_000
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: 1), configuration: config)
        let call = Task { try await client.submit([Entry(userID: 1)], to: 1) }
        try await Task.sleep(for: .milliseconds(200))  // it is retrying a refused connection by now
        call.cancel()
        do {
            _ = try await call.value
            Issue.record("a cancelled call succeeded")
        } catch {
            #expect(error is CancellationError, "\(error)")
        }
    }

    @Test func shutdownSendsWhatEnterIsCollectingAndTheLoggerSeesRetries() async throws {
        // Anonymous buckets are per connection: burst 4, 1 token a second.
        let (s, dir) = try await TestServer.start { $0.admission.anonymous = RateLimit(ratePerSecond: 1, burst: 4) }
        _ = dir
        let log = CapturedLog()
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.logger = Logger(label: "client-test", factory: log.handler)
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: config)
        let raffle = try await client.createRaffle(title: "Shutdown", duration: .seconds(600)).id
        // Two batches of cost 3 at once on one connection: one fits the burst, the other is throttled
        // (its tokens take 2 s to come), and its retry is logged.
        async let first = client.submit([Entry(userID: 100), Entry(userID: 101)], to: raffle)
        async let second = client.submit([Entry(userID: 102), Entry(userID: 103)], to: raffle)
        _ = try await (first, second)
        #expect(log.lines.withLock { $0 }.contains { $0.contains("retrying") && $0.contains("throttled") }, "\(log.lines.withLock { $0 })")
        // A second client (its own connection, its own bucket) collects enter calls until shutdown.
        var lingering = RaffleClientConfiguration()
        lingering.maxLinger = .seconds(30)  // only shutdown (or a full batch) sends what enter collects
        let app = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: lingering)
        let entering = (1...3).map { user in Task { try await app.enter(user: UInt64(user), raffle: raffle) } }
        try await Task.sleep(for: .milliseconds(100))
        await app.shutdown()
        for task in entering { #expect(try await task.value == .accepted) }
        #expect(try await client.raffle(raffle).entries == 7)
        await client.shutdown()
        await s.shutdown()
    }
}
