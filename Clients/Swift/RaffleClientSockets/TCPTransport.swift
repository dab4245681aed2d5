public import NIOCore
import NIOPosix
public import NIOSSL
public import RaffleClient
import RaffleWire
import Synchronization

/// `RaffleTransport` over raw TCP (PROTOCOL.md §12): frames back to back on one connection, replies
/// matched by request id; the next call reconnects after a failure. `openStream` opens a dedicated
/// connection, so a `BulkStream` works over TCP too. Raw TCP carries no credentials (the server puts
/// it in its anonymous class) and no admin API: admin calls throw; use `HTTP2Transport` for them.
/// Where the server has a certificate its raw-TCP port speaks TLS: give `tls`.
public final class TCPTransport: RaffleTransport {
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let tls: NIOSSLContext?
    private let connection = SharedConnection<Connection>()

    /// A transport to `host:port` (the server's raw-TCP port), connecting on first use.
    public init(host: String, port: Int, group: (any EventLoopGroup)? = nil) {
        self.host = host
        self.port = port
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        tls = nil
    }

    /// The same over TLS. `tls`: e.g. `TCPTransport.tlsConfiguration(caFile:)`.
    /// - Throws: NIOSSL's error when the configuration cannot be used (e.g. an unreadable CA file).
    public init(host: String, port: Int, tls: TLSConfiguration, group: (any EventLoopGroup)? = nil) throws {
        self.host = host
        self.port = port
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        self.tls = try NIOSSLContext(configuration: tls)
    }

    /// A TLS configuration for raffled's raw-TCP port: TLS 1.2 or later, the system's trust store
    /// plus `caFile` (PEM) when given. No ALPN: the port speaks only frames.
    public static func tlsConfiguration(caFile: String? = nil) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile { configuration.additionalTrustRoots = [.file(caFile)] }
        return configuration
    }

    final class Connection: Sendable {
        let channel: any Channel
        let waiters: ReplyWaiters

        init(channel: any Channel, waiters: ReplyWaiters) {
            self.channel = channel
            self.waiters = waiters
        }
    }

    /// Opens a connection whose reply frames go to `onFrame`, and `onClose` when it ends.
    private func connect(onFrame: @escaping @Sendable ([UInt8], UInt64) -> Void, onClose: @escaping @Sendable (String) -> Void) async throws -> any Channel {
        do {
            return try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { [tls, host] channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            var v4 = in_addr(), v6 = in6_addr()
                            let literal = inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: literal ? nil : host))
                        }
                        try channel.pipeline.syncOperations.addHandler(FrameReader(onFrame: onFrame, onClose: onClose))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw RaffleClientError(.connectionFailed, "cannot connect to \(host):\(port) (raw TCP): \(error)")
        }
    }

    private func shared() async throws -> Connection {
        try await connection.get(usable: { _ in true }) { [self] in
            let waiters = ReplyWaiters()
            let channel = try await connect(onFrame: { frame, id in waiters.deliver(id: id, frame) }, onClose: { waiters.failAll($0) })
            return Connection(channel: channel, waiters: waiters)
        }
    }

    private func forget(_ failed: Connection) {
        connection.forget(failed)
    }

    public func send(frames: [UInt8], authorization: String?) async throws -> FramesReply {
        try await send(frames: frames, timeout: nil)
    }

    /// Sends with an event-loop timer for the timeout (no timer task per request).
    public func send(frames: [UInt8], authorization: String?, timeout: Duration) async throws -> FramesReply {
        try await send(frames: frames, timeout: timeout)
    }

    private func send(frames: [UInt8], timeout: Duration?) async throws -> FramesReply {
        let ids = requestIDs(of: frames)
        guard ids.count == 1, let id = ids.first else { throw RaffleClientError(.invalidRequest, "send one frame per call over raw TCP") }
        let c = try await shared()
        let reply = await c.waiters.wait(for: id) {
            c.channel.writeAndFlush(ByteBuffer(bytes: frames), promise: nil)
            if let timeout {
                let waiters = c.waiters
                c.channel.eventLoop.scheduleTask(in: .nanoseconds(timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
                    waiters.cancel(id)
                }
            }
        }
        guard let reply else {
            if let failure = c.waiters.failure {
                forget(c)
                throw RaffleClientError(.connectionFailed, "raw TCP connection to \(host):\(port) lost: \(failure)")
            }
            throw RaffleClientError(.timedOut, "no reply to request \(id)")
        }
        return FramesReply(status: 200, body: reply)
    }

    public func admin(method: String, path: String, body: [UInt8]?, authorization: String?) async throws -> AdminReply {
        throw RaffleClientError(.invalidRequest, "admin calls need the HTTP/2 transport (raw TCP carries frames only)")
    }

    public func openStream(authorization: String?) async throws -> any FrameStream {
        let (replies, continuation) = AsyncStream<[UInt8]>.makeStream()
        let channel = try await connect(onFrame: { frame, _ in continuation.yield(frame) }, onClose: { _ in continuation.finish() })
        continuation.onTermination = { _ in channel.close(promise: nil) }
        return TCPFrameStream(channel: channel, replies: replies)
    }

    public func close() async {
        if let c = connection.take() {
            try? await c.channel.close()
        }
    }
}

/// A dedicated raw-TCP connection used as one long-lived stream.
struct TCPFrameStream: FrameStream {
    let channel: any Channel
    let replies: AsyncStream<[UInt8]>

    func write(_ frames: [UInt8]) { channel.writeAndFlush(ByteBuffer(bytes: frames), promise: nil) }
    func finish() { channel.close(mode: .output, promise: nil) }
}

/// Splits the reply byte stream into frames (by the header's length) and hands each on whole.
final class FrameReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onFrame: @Sendable ([UInt8], UInt64) -> Void
    private let onClose: @Sendable (String) -> Void
    private var buffer = ByteBuffer()
    private var closed = false

    init(onFrame: @escaping @Sendable ([UInt8], UInt64) -> Void, onClose: @escaping @Sendable (String) -> Void) {
        self.onFrame = onFrame
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        while buffer.readableBytes >= Wire.headerSize {
            guard let length = buffer.getInteger(at: buffer.readerIndex + 8, endianness: .little, as: UInt32.self),
                let id = buffer.getInteger(at: buffer.readerIndex + 12, endianness: .little, as: UInt64.self)
            else { break }
            let total = Wire.headerSize + Int(length)
            guard total <= Wire.headerSize + Wire.maxErrorMessageBytes + Wire.errorPrefixSize + 65_536 else {
                finish(context, "the server sent a frame of \(total) bytes")
                return
            }
            guard let frame = buffer.readBytes(length: total) else { break }
            onFrame(frame, id)
        }
        buffer.discardReadBytes()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { finish(context, "the server closed the connection") }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context, "connection closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(context, "\(error)")
    }

    private func finish(_ context: ChannelHandlerContext, _ why: String) {
        guard !closed else { return }
        closed = true
        onClose(why)
        context.close(promise: nil)
    }
}
