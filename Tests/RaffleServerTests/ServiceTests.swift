import Foundation
import Logging
import RaffleLedger
import RaffleServer
import RaffleTestSupport
import ServiceLifecycle
import Testing

/// `RaffleServer` as a swift-service-lifecycle `Service`: `run()` returns on graceful shutdown and on
/// cancellation, having stopped the server.
@Suite("RaffleServer as a Service", .timeLimit(.minutes(1)))
struct ServiceTests {
    func start(_ dir: TempDir) async throws -> RaffleServer {
        var config = ServerConfiguration()
        config.port = 0
        config.eventLoops = 1
        config.ingestBufferBytes = 1 << 20
        return try await RaffleServer.start(configuration: config, local: LocalLedgerConfiguration(directory: dir.path), logger: Logger(label: "test"))
    }

    /// Whether something accepts connections on `port`.
    func listening(_ port: Int) -> Bool { (try? RawSocket(port: port)) != nil }

    @Test func runReturnsWhenItsTaskIsCancelledAndTheServerIsStopped() async throws {
        let dir = TempDir()
        let server = try await start(dir)
        #expect(listening(server.port))
        let running = Task { try await server.run() }
        try await Task.sleep(for: .milliseconds(200))
        running.cancel()
        try await running.value  // returns (a spinning or stuck run() would hit the time limit)
        #expect(!listening(server.port), "the listener is closed")
        #expect(server.ledger.backlog().pending == 0)
    }

    @Test func runReturnsOnGracefulShutdownOfItsServiceGroup() async throws {
        let dir = TempDir()
        let server = try await start(dir)
        let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        try await Task.sleep(for: .milliseconds(200))
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(!listening(server.port))
    }
}
