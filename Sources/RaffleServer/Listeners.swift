import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

// The server's sockets: the main and admin HTTP listeners (HTTP/2 or HTTP/1.1, TLS when configured),
// raw TCP (PROTOCOL.md §12) and one UDP socket per loop (§13) — all on the loops the server made,
// all into the same entry path.

/// SO_REUSEPORT, which NIO names only by level and number.
let reusePortOption = ChannelOptions.socket(SocketOptionLevel(SOL_SOCKET), SO_REUSEPORT)

/// What every listener shares about the process: whether it is shutting down (`/readyz`).
final class ServerState: Sendable {
    private let shuttingDown = Atomic<Bool>(false)

    var isShuttingDown: Bool { shuttingDown.load(ordering: .acquiring) }

    func beginShutdown() { shuttingDown.store(true, ordering: .releasing) }
}

/// A main or admin listener: its child channels become HTTP/2 or HTTP/1.1 connections (after TLS
/// when it is configured) on the loop contexts the server made.
struct HTTPListener: Sendable {
    let contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>]
    let admin: AdminAPI
    let tls: TLSContextHolder?
    let logger: Logger
    /// The per-address connection limits (nil: none, e.g. the admin listener).
    var cap: AddressCap? = nil
    var metrics: ServerMetrics? = nil

    func bootstrap(group: MultiThreadedEventLoopGroup, configuration: ServerConfiguration) -> ServerBootstrap {
        let high = max(configuration.maxUnsentBytesPerConnection, 64 << 10)
        let timeout = TimeAmount.milliseconds(max(configuration.handshakeTimeoutMilliseconds, 1))
        return ServerBootstrap(group: group)
            .serverChannelInitializer { [cap, metrics, logger] server in Listeners.gate(server, cap: cap, metrics: metrics, logger: logger) }
            .serverChannelOption(.backlog, value: 1_024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(reusePortOption, value: configuration.reusePort ? 1 : 0)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: high / 2, high: high))
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                guard let context = contexts[ObjectIdentifier(channel.eventLoop)] else {
                    return channel.eventLoop.makeFailedFuture(ServerStartError(message: "no loop context"))
                }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls.context)) }
                    let loop = context.value
                    let logger = Listeners.connectionLogger(logger, channel)
                    try pipeline.addHandler(
                        ProtocolSelector(mode: tls == nil ? .sniff : .alpn, timeout: timeout) { choice, selected in
                            let pipeline = selected.pipeline.syncOperations
                            switch choice {
                            case .http2: try pipeline.addHandler(H2ServerConnection(loop: loop, admin: admin, logger: logger))
                            case .http1: try HTTP1ServerConnection.install(on: pipeline, loop: loop, admin: admin, logger: logger)
                            }
                        })
                }
            }
    }
}

/// The raw TCP and UDP sockets.
enum Listeners {
    /// The logger for one connection: `peer` (its address) in the metadata of every line it writes —
    /// a cut-off, a timeout, an error — so an operator can tell who it was.
    static func connectionLogger(_ logger: Logger, _ channel: any Channel) -> Logger {
        var connection = logger
        connection[metadataKey: "peer"] = .string(channel.remoteAddress.map { "\($0)" } ?? "?")
        return connection
    }

    /// Puts the per-address limits (`AddressGate`) on a listening socket, if there are any.
    static func gate(_ server: any Channel, cap: AddressCap?, metrics: ServerMetrics?, logger: Logger) -> EventLoopFuture<Void> {
        guard let cap, let metrics else { return server.eventLoop.makeSucceededVoidFuture() }
        return server.eventLoop.makeCompletedFuture {
            try server.pipeline.syncOperations.addHandler(AddressGate(cap: cap, metrics: metrics, logger: logger))
        }
    }

    /// Raw TCP: frames back to back, over TLS with the main port's certificate when it has one.
    static func bindRawTCP(
        group: MultiThreadedEventLoopGroup, contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>], port: Int, configuration: ServerConfiguration,
        tls: TLSContextHolder?, cap: AddressCap?, metrics: ServerMetrics, logger: Logger
    ) async throws -> any Channel {
        let high = max(configuration.maxUnsentBytesPerConnection, 64 << 10)
        return try await ServerBootstrap(group: group)
            .serverChannelInitializer { server in gate(server, cap: cap, metrics: metrics, logger: logger) }
            .serverChannelOption(.backlog, value: 1_024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(reusePortOption, value: configuration.reusePort ? 1 : 0)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: high / 2, high: high))
            .childChannelInitializer { channel in
                guard let context = contexts[ObjectIdentifier(channel.eventLoop)] else {
                    return channel.eventLoop.makeFailedFuture(ServerStartError(message: "no loop context"))
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context)) }
                    try channel.pipeline.syncOperations.addHandler(TCPServerConnection(loop: context.value, logger: connectionLogger(logger, channel)))
                }
            }
            .bind(host: configuration.host, port: port).get()
    }

    /// UDP: one socket per loop on the same port (SO_REUSEPORT), so the kernel spreads senders; the
    /// source-address buckets are shared, so spreading gives no one more.
    static func bindUDP(
        group: MultiThreadedEventLoopGroup, contexts: [NIOLoopBound<LoopContext>], port: Int, configuration: ServerConfiguration, logger: Logger
    ) async throws -> [any Channel] {
        // Asked for any free port: the probe-then-bind below can lose the port to another process
        // in between (EADDRINUSE); then it probes again, a few times.
        var attempt = 0
        while true {
            do {
                return try await bindUDPOnce(group: group, contexts: contexts, port: port, configuration: configuration, logger: logger)
            } catch let error as IOError where error.errnoCode == EADDRINUSE && port == 0 && attempt < 4 {
                attempt += 1
            }
        }
    }

    private static func bindUDPOnce(
        group: MultiThreadedEventLoopGroup, contexts: [NIOLoopBound<LoopContext>], port: Int, configuration: ServerConfiguration, logger: Logger
    ) async throws -> [any Channel] {
        let udpBatch = 32
        let udpRoom = max(2_048, configuration.udpMaxDatagramBytes + 1)
        var udpPort = port
        if udpPort == 0 {
            // Asked for any free port: bind 0 with SO_REUSEPORT and Linux may hand out a port
            // another process's SO_REUSEPORT socket already holds (it then shares its
            // datagrams). A probe without the option gets a port nobody holds; the loops bind it.
            let probe = try await DatagramBootstrap(group: group).bind(host: configuration.host, port: 0).get()
            udpPort = probe.localAddress?.port ?? 0
            try await probe.close()
        }
        let sources = UDPSourceBuckets(limit: configuration.admission.anonymous)
        var channels: [any Channel] = []
        do {
            for context in contexts {
                let udp = try await DatagramBootstrap(group: context.eventLoop)
                    .channelOption(.socketOption(.so_reuseaddr), value: 1)
                    .channelOption(reusePortOption, value: 1)
                    .channelOption(.datagramVectorReadMessageCount, value: udpBatch)
                    // One vector read (32 datagrams) per turn of the loop: a UDP flood gets a turn
                    // like any connection, not four, and what it sends beyond that waits in (and
                    // overflows from) the socket's buffer, where dropping costs the kernel little.
                    // Measured: Bench/RESULTS.md, "The attack catalogue".
                    .channelOption(.maxMessagesPerRead, value: 1)
                    // NIO splits one buffer among the vector read's messages: each gets room for a
                    // datagram over the limit, so oversize ones are seen (and answered) as such.
                    .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: udpBatch * udpRoom))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(UDPServerHandler(loop: context.value, sources: sources, logger: logger))
                        }
                    }
                    .bind(host: configuration.host, port: udpPort).get()
                udpPort = udp.localAddress?.port ?? udpPort
                channels.append(udp)
            }
        } catch {
            for udp in channels { try? await udp.close() }
            throw error
        }
        return channels
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
