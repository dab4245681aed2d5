import Foundation
import Logging
package import NIOCore
import RaffleAdmission
import RaffleCore
package import RaffleLedger

/// What the fuzz targets (`Tests/Fuzz`) need to drive a connection handler in memory: one server's
/// worth of state (a local ledger with an open raffle, admission, the admin API) on the fuzzer's
/// event loop, and the HTTP/2 or HTTP/1.1 handler added to a pipeline. `package`: seen by this
/// package's targets only, never by users of the library.
package final class FuzzServer {
    let loop: LoopContext
    var admin: AdminAPI
    let logger: Logger
    /// The ledger (durability `.none`: the fuzzers exercise parsing, not the disk).
    package let ledger: LocalLedger
    /// The open raffle's id (seed inputs post entries to raffle 1; this is it on a fresh directory).
    package let raffleID: UInt64

    /// A server on `eventLoop` keeping its log in `directory`.
    package init(eventLoop: any EventLoop, directory: String) throws {
        var configuration = ServerConfiguration()
        // nghttp2's blocks at their exact sizes, so AddressSanitizer checks its real bounds.
        configuration.http2Options.allocatorCacheBytes = 0
        ledger = try LocalLedger(directory: directory, durability: .none)
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        guard case .success(let (info, _)) = ledger.createRaffle(RaffleSpec(title: "fuzz", opensAt: 0, closesAt: Int64.max / 2), now: now) else {
            throw LedgerError(.unavailable, "cannot create the fuzzing raffle")
        }
        raffleID = info.id
        let metrics = ServerMetrics(durability: "none")
        let admission = AdmissionController(configuration.admission)
        loop = LoopContext(
            eventLoop: eventLoop, ledger: ledger, admission: admission, configuration: configuration, metrics: metrics, slotCount: 8)
        admin = AdminAPI(
            ledger: ledger, admission: admission, metrics: metrics, durability: .none, now: { wallClockMilliseconds() },
            keys: AdminKeys([.init(name: "fuzz", key: "raffled-fuzz-admin-key-0123456789")]), state: ServerState())
        // One thread, no tasks: ledger-backed admin answers are refused (their routing is still fuzzed).
        admin.answersOnlyAtOnce = true
        var logger = Logger(label: "raffled-fuzz")
        logger.logLevel = .critical
        self.logger = logger
    }

    /// Adds the HTTP/2 connection handler (what a connection after the preface gets).
    package func addHTTP2(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        try pipeline.addHandler(H2ServerConnection(loop: loop, admin: admin, logger: logger))
    }

    /// Adds the HTTP/1.1 handlers (NIOHTTP1's parser, then the exchange handler).
    package func addHTTP1(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        try HTTP1ServerConnection.install(on: pipeline, loop: loop, admin: admin, logger: logger)
    }

    /// Tells the loop that everything appended is durable (what the commit hop does in production),
    /// so replies waiting for the log are released.
    package func commitAll() {
        let point = CommitPoint(lsn: ledger.log.appendedLSN)
        var spins = 0
        while !ledger.isDurable(point) && spins < 10_000 {
            usleep(10)
            spins += 1
        }
        loop.committed(.success(ledger.isDurable(point) ? point : CommitPoint(lsn: 0)))
    }
}
