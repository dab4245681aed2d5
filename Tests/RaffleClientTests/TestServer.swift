import Logging
import RaffleLedger
import RaffleServer
import RaffleTestSupport

/// A real raffled on 127.0.0.1 for the client tests: one loop, 1 MiB of ingest buffers, quiet logs.
enum TestServer {
    /// Starts a server with its data in `dir` on `port` (0: a free one), after `configure`.
    static func start(
        in dir: TempDir = TempDir(), port: Int = 0, _ configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws -> (RaffleServer, TempDir) {
        var config = ServerConfiguration()
        config.port = port
        config.eventLoops = 1
        config.ingestBufferBytes = 1 << 20
        config.adminKeys = AdminKeys([.init(name: "test", key: testAdminKey)])
        configure(&config)
        var logger = Logger(label: "client-test")
        logger.logLevel = .critical
        return (try await RaffleServer.start(configuration: config, local: LocalLedgerConfiguration(directory: dir.path), logger: logger), dir)
    }
}
