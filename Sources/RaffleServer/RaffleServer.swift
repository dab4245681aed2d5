public import Logging
public import NIOCore
import NIOPosix
import NIOSSL
import RaffleAdmission
public import RaffleLedger
public import ServiceLifecycle
import Synchronization

/// A running raffled server: the HTTP/2 listener, its event loops, and the ledger.
///
/// ```swift
/// let server = try await RaffleServer.start(configuration: config, logger: logger)
/// print(server.localAddress)          // where it listens
/// try await server.run()              // serve until graceful shutdown or cancellation, then stop
/// // or, without run(): await server.shutdown()   // graceful: GOAWAY, answer in-flight, fsync, stop
/// ```
///
/// It is a swift-service-lifecycle `Service`: put it in a `ServiceGroup` (see `RaffleService` for
/// a readiness callback).
public final class RaffleServer: Service, Sendable {
    /// The configuration it runs with.
    public let configuration: ServerConfiguration
    /// The ledger (the local write-ahead log unless another was given to `start`).
    public let ledger: any Ledger
    /// Where the HTTP/2 listener is bound (useful with port 0).
    public let localAddress: SocketAddress
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let tcpChannel: (any Channel)?
    private let adminChannel: (any Channel)?
    private let tls: TLSContextHolder?
    private let state: ServerState
    private let udpChannels: [any Channel]
    private let contexts: [NIOLoopBound<LoopContext>]
    private let logger: Logger
    private let stopped = Mutex(false)
    private let stopRequested = Atomic<Bool>(false)

    private init(
        configuration: ServerConfiguration, ledger: any Ledger, group: MultiThreadedEventLoopGroup, channel: any Channel,
        tcpChannel: (any Channel)?, adminChannel: (any Channel)?, udpChannels: [any Channel], contexts: [NIOLoopBound<LoopContext>],
        tls: TLSContextHolder?, state: ServerState, logger: Logger
    ) throws {
        self.configuration = configuration
        self.ledger = ledger
        self.group = group
        self.channel = channel
        self.tcpChannel = tcpChannel
        self.adminChannel = adminChannel
        self.tls = tls
        self.state = state
        self.udpChannels = udpChannels
        self.contexts = contexts
        self.logger = logger
        guard let address = channel.localAddress else { throw ServerStartError(message: "the listener has no local address") }
        localAddress = address
    }

    /// The port the main listener (HTTP/2 and HTTP/1.1) is bound to.
    public var port: Int { localAddress.port ?? configuration.port }

    /// The port of the separate admin listener (nil: the admin API is on the main port).
    public var adminPort: Int? { adminChannel?.localAddress?.port }

    /// Whether the main port and raw TCP speak TLS.
    public var usesTLS: Bool { tls != nil }

    /// Reads the TLS certificate chain and key again (SIGHUP): new connections use them, open ones
    /// keep theirs, so none is dropped. On failure the old ones stay in use.
    /// - Throws: `TLSSetupError` when the files cannot be used; `ServerStartError` without TLS.
    @discardableResult
    public func reloadTLS() throws -> TLSLoaded {
        guard let tls else { throw ServerStartError(message: "TLS is not configured (--tls-cert, --tls-key)") }
        return try tls.reload()
    }

    /// The port the raw-TCP listener is bound to (nil: raw TCP is off).
    public var tcpPort: Int? { tcpChannel?.localAddress?.port }

    /// The port the UDP sockets are bound to (nil: UDP is off).
    public var udpPort: Int? { udpChannels.first?.localAddress?.port }

    /// Opens the local ledger (replaying its log), starts the event loops and binds the listeners.
    /// - Throws: `LogCorruption` / `LogFailure` from the log, `TLSSetupError` for unusable TLS
    ///   files, or a bind error.
    public static func start(
        configuration: ServerConfiguration, local: LocalLedgerConfiguration = LocalLedgerConfiguration(), logger: Logger
    ) async throws -> RaffleServer {
        // TLS files are read before the ledger replays its log, so a bad certificate fails fast.
        let tls = try configuration.tls.map { try TLSContextHolder(files: $0) }
        let ledger = try LocalLedger(local)
        let replay = ledger.replay
        let recovery = ledger.recovery
        logger.info(
            "ledger ready",
            metadata: [
                "data": "\(local.directory)", "checkpoint": "\(recovery.checkpoint ?? "none")",
                "checkpoint_entries": "\(recovery.checkpointEntries)", "records_replayed": "\(replay.records)",
                "bytes_replayed": "\(replay.bytes)", "segments": "\(replay.segments)", "ms": "\(Int(recovery.milliseconds))",
                "durability": "\(local.durability.rawValue)",
            ])
        for damage in recovery.damaged {
            logger.error("passed over a damaged checkpoint: the log after an older one is replayed instead", metadata: ["problem": "\(damage)"])
        }
        if let tail = replay.truncatedTail {
            logger.warning("cut a torn tail off the log", metadata: ["file": "\(tail.file)", "offset": "\(tail.offset)", "bytes": "\(tail.bytes)"])
        }
        return try await start(configuration: configuration, ledger: ledger, tls: tls, logger: logger)
    }

    /// Starts the server on `ledger` (any `Ledger`: the local one, or another backend such as
    /// `PostgresLedger`); how entries are stored is the ledger's business. The server stops the ledger when it shuts down, or when it fails to start.
    public static func start(configuration: ServerConfiguration, ledger: any Ledger, logger: Logger) async throws -> RaffleServer {
        let tls: TLSContextHolder?
        do { tls = try configuration.tls.map { try TLSContextHolder(files: $0) } } catch {
            ledger.shutdown()
            throw error
        }
        return try await start(configuration: configuration, ledger: ledger, tls: tls, logger: logger)
    }

    /// The start itself, with the TLS files already read; it stops `ledger` if it cannot start.
    private static func start(configuration: ServerConfiguration, ledger: any Ledger, tls: TLSContextHolder?, logger: Logger) async throws
        -> RaffleServer
    {
        let loops = max(configuration.eventLoops, 1)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
        let metrics = ServerMetrics(durability: ledger.durability.rawValue)
        let admission = AdmissionController(configuration.admission)
        let slotsPerLoop = max(configuration.ingestBufferBytes / configuration.ingestSlotBytes / loops, 1)
        var contexts: [NIOLoopBound<LoopContext>] = []
        for loop in group.makeIterator() {
            let context = try await loop.submit {
                NIOLoopBound(
                    LoopContext(
                        eventLoop: loop, ledger: ledger, admission: admission, configuration: configuration, metrics: metrics,
                        slotCount: slotsPerLoop),
                    eventLoop: loop)
            }.get()
            contexts.append(context)
        }
        let byLoop = Dictionary(uniqueKeysWithValues: contexts.map { (ObjectIdentifier($0.eventLoop), $0) })
        let all = contexts
        // Backpressure: after each commit, tell admission how far the ledger lags and how fast it drains.
        let lastCommit = Mutex<(durable: UInt64, at: UInt64)>((ledger.backlog().durable, monotonicNanoseconds()))
        // Storage trouble is said once, loudly, with a metric: a failure (nothing more is
        // acknowledged until restart) and a stall (the disk is full; it resumes by itself).
        let failureSaid = Atomic<Bool>(false)
        metrics.storageStalled.record(0)
        ledger.onStall { reason in
            metrics.storageStalled.record(reason == nil ? 0 : 1)
            if let reason {
                logger.error("storage stalled: new entries are refused (UNAVAILABLE) until space returns", metadata: ["reason": "\(reason)"])
            } else {
                logger.notice("storage resumed: the log is writing again")
            }
        }
        ledger.onCheckpoint { result in
            switch result {
            case .success(let report):
                metrics.checkpoints.increment()
                metrics.checkpointBytes.record(report.bytes)
                logger.info(
                    "checkpoint written",
                    metadata: [
                        "file": "\(report.file)", "entries": "\(report.entries)", "bytes": "\(report.bytes)",
                        "retired_segments": "\(report.retiredSegments)", "ms": "\(Int(report.milliseconds))",
                    ])
            case .failure(let error):
                metrics.checkpointFailures.increment()
                logger.error(
                    "checkpoint failed: nothing is lost (the log holds it all) but restart will replay more; the checkpoint thread tries again in 10 s",
                    metadata: ["error": "\(error.message)"])
            }
        }
        ledger.onCommit { [ledger] result in
            if case .failure(let error) = result, !failureSaid.exchange(true, ordering: .relaxed) {
                metrics.storageFailures.increment()
                logger.critical(
                    "storage failed: no entry is acknowledged from now on; restart raffled once the storage is fixed",
                    metadata: ["error": "\(error.message)"])
            }
            let now = monotonicNanoseconds()
            let (pending, durable) = ledger.backlog()
            let (drained, over) = lastCommit.withLock { last -> (UInt64, UInt64) in
                defer { last = (durable, now) }
                return (durable &- min(last.durable, durable), now &- last.at)
            }
            admission.logState(backlogBytes: pending, drainedBytes: drained, overNanoseconds: over)
            for context in all {
                context.eventLoop.execute { context.value.committed(result) }
            }
        }
        let state = ServerState()
        var admin = AdminAPI(
            ledger: ledger, admission: admission, metrics: metrics, durability: ledger.durability, now: { wallClockMilliseconds() },
            keys: configuration.adminKeys, state: state)
        let separateAdmin = configuration.adminPort != nil
        admin.servesAdmin = !separateAdmin
        var adminOnly = admin
        adminOnly.servesAdmin = true
        adminOnly.servesEntries = false
        // One set of per-address limits for the main port and raw TCP together (the admin listener is the operators').
        let limits = AddressCap(limit: configuration.maxConnectionsPerAddress, rate: configuration.maxNewConnectionsPerAddressPerSecond)
        let cap = limits.isEnabled ? limits : nil
        let main = HTTPListener(contexts: byLoop, admin: admin, tls: tls, logger: logger, cap: cap, metrics: metrics)
        let channel: any Channel
        do {
            channel = try await main.bootstrap(group: group, configuration: configuration)
                .bind(host: configuration.host, port: configuration.port).get()
        } catch {
            ledger.shutdown()
            try? await group.shutdownGracefully()
            throw ServerStartError(message: "cannot listen on \(configuration.host):\(configuration.port): \(error)")
        }
        // The admin listener (optional), raw TCP (PROTOCOL.md §12) and UDP (§13): the same loops,
        // the same entry path.
        var adminChannel: (any Channel)?
        var tcpChannel: (any Channel)?
        var udpChannels: [any Channel] = []
        do {
            if let adminPort = configuration.adminPort {
                let host = configuration.adminHost ?? configuration.host
                let adminListener = HTTPListener(contexts: byLoop, admin: adminOnly, tls: nil, logger: logger)
                do {
                    adminChannel = try await adminListener.bootstrap(group: group, configuration: configuration).bind(host: host, port: adminPort).get()
                } catch {
                    throw ServerStartError(message: "cannot listen for the admin API on \(host):\(adminPort): \(error)")
                }
            }
            if let tcpPort = configuration.resolvedTCPPort {
                tcpChannel = try await Listeners.bindRawTCP(group: group, contexts: byLoop, port: tcpPort, configuration: configuration, tls: tls, cap: cap, metrics: metrics, logger: logger)
            }
            if let udpPort = configuration.resolvedUDPPort {
                udpChannels = try await Listeners.bindUDP(group: group, contexts: contexts, port: udpPort, configuration: configuration, logger: logger)
            }
        } catch {
            try? await channel.close()
            try? await adminChannel?.close()
            try? await tcpChannel?.close()
            for udp in udpChannels { try? await udp.close() }
            ledger.shutdown()
            try? await group.shutdownGracefully()
            if let error = error as? ServerStartError { throw error }
            throw ServerStartError(message: "cannot listen for raw TCP or UDP on \(configuration.host): \(error)")
        }
        return try RaffleServer(
            configuration: configuration, ledger: ledger, group: group, channel: channel, tcpChannel: tcpChannel, adminChannel: adminChannel,
            udpChannels: udpChannels, contexts: contexts, tls: tls, state: state, logger: logger)
    }

    /// Serves until graceful shutdown (a ServiceLifecycle `ServiceGroup`: SIGTERM/SIGINT in raffled),
    /// `requestStop()`, or the cancellation of the calling task — closing due raffles in a task of its
    /// own meanwhile — then shuts down gracefully (`shutdown()`) and returns. The listeners are bound
    /// by `start`, so their ports are known before this runs.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.closeDueRaffles() }
            }
        } onGracefulShutdown: {
            self.requestStop()
        }
        await shutdown()
    }

    /// Closes raffles whose closing time has passed, once a second, until `requestStop()`,
    /// `shutdown()` or the task's cancellation.
    private func closeDueRaffles() async {
        var ticks = 0
        while !stopRequested.load(ordering: .acquiring) && !stopped.withLock({ $0 }) {
            // A cancelled sleep ends the loop (swallowing the error would spin at full CPU).
            do { try await Task.sleep(for: .milliseconds(100)) } catch { return }
            ticks += 1
            guard ticks % 10 == 0 else { continue }
            for id in await ledger.closeDueRaffles(now: wallClockMilliseconds()) {
                logger.info("raffle closed and drawn", metadata: ["raffle": "\(id)"])
            }
        }
    }

    /// Makes `run()` shut down and return soon.
    public func requestStop() { stopRequested.store(true, ordering: .releasing) }

    /// Graceful shutdown: stop accepting, send GOAWAY, let in-flight requests finish and be
    /// acknowledged (up to `grace`), fsync the log, stop the loops. Idempotent.
    public func shutdown(grace: Duration = .seconds(10)) async {
        guard stopped.withLock({ was in defer { was = true }; return !was }) else { return }
        state.beginShutdown()
        try? await channel.close()
        try? await adminChannel?.close()
        try? await tcpChannel?.close()
        for context in contexts {
            try? await context.eventLoop.submit { context.value.beginShutdown() }.get()
        }
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline {
            var open = 0
            for context in contexts { open += (try? await context.eventLoop.submit { context.value.connections.count }.get()) ?? 0 }
            if open == 0 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        if let failure = ledger.shutdown() {
            logger.error("the ledger failed before shutdown", metadata: ["error": "\(failure)"])
        }
        try? await group.shutdownGracefully()
        logger.info("stopped", metadata: ["durable": "\(ledger.backlog().durable)"])
    }
}

/// The server could not start.
public struct ServerStartError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
