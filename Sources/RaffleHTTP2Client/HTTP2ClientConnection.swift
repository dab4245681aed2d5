import Foundation
public import NIOCore
import NIOPosix
public import NIOSSL
import NIOTLS
import RaffleHTTP2

/// A response read by `HTTP2Client`.
public struct HTTP2Response: Sendable {
    /// `:status`.
    public var status: Int
    /// Response header fields (lower-case names), in order.
    public var headers: [(name: String, value: String)]
    /// The whole body.
    public var body: ByteBuffer
    /// The HTTP/2 error code if the stream was reset (0: ended normally).
    public var resetCode: UInt32

    /// The first value of header `name`.
    public func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}

/// Why a request failed.
public struct HTTP2ClientError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A minimal HTTP/2 client over SwiftNIO and the same nghttp2 glue as the server — h2c with prior
/// knowledge, or over TLS with ALPN `h2` — many concurrent requests multiplexed on one connection.
/// Used by tests and tools; the `RaffleClient` library builds on it.
public final class HTTP2Client: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<HTTP2ClientHandler>

    private init(channel: any Channel, handler: NIOLoopBound<HTTP2ClientHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects to `host:port` on `group`; with `tls`, over TLS (the context should offer ALPN
    /// `h2`, see `clientTLSConfiguration`), waiting for the handshake.
    /// - Throws: `HTTP2ClientError` saying why the TLS handshake failed (certificate expired, not
    ///   yet valid, not trusted, not for this host), or the connect error.
    public static func connect(host: String, port: Int, group: any EventLoopGroup, tls: NIOSSLContext? = nil) async throws -> HTTP2Client {
        let loop = group.next()
        let handlerBox = try await loop.submit { NIOLoopBound(HTTP2ClientHandler(), eventLoop: loop) }.get()
        // Only a TLS connection has a handshake to wait for; its waiter completes the promise on
        // success, error or close, so it is never left unfulfilled.
        let handshake = tls == nil ? nil : loop.makePromise(of: Void.self)
        let connecting = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls, let handshake {
                        let waiter = TLSHandshakeWaiter(promise: handshake, peer: "\(host):\(port)")
                        let serverName = host.isIPAddress ? nil : host
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: serverName, verificationCallback: waiter.observe))
                        try channel.pipeline.syncOperations.addHandler(waiter)
                    }
                    try channel.pipeline.syncOperations.addHandler(handlerBox.value)
                }
            }
            .connect(host: host, port: port)
        let channel: any Channel
        channel = try await connecting.get()
        do { try await handshake?.futureResult.get() } catch {
            try? await channel.close()
            throw error
        }
        return HTTP2Client(channel: channel, handler: handlerBox)
    }

    /// A TLS client configuration for raffled: ALPN `h2`, TLS 1.2 or later, the system's trust
    /// store plus `caFile` (PEM) when given — for a private CA or a self-signed certificate.
    public static func clientTLSConfiguration(caFile: String? = nil) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["h2"]
        if let caFile { configuration.additionalTrustRoots = [.file(caFile)] }
        return configuration
    }

    /// Sends a request and waits for the whole response; with a `timeout`, fails with
    /// `HTTP2ClientError` if none came in time (a timer on the event loop, not a task).
    public func request(
        method: String, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil, timeout: TimeAmount? = nil
    ) async throws -> HTTP2Response {
        let handler = self.handler
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: HTTP2Response.self)
        loop.execute {
            handler.value.start(method: method, path: path, headers: headers, body: body, promise: promise)
        }
        guard let timeout else { return try await promise.futureResult.get() }
        let outer = loop.makePromise(of: HTTP2Response.self)
        loop.execute {
            // Both closures run on the loop: the flag needs no lock, and `outer` completes once.
            let done = NIOLoopBoundBox(false, eventLoop: loop)
            let timer = loop.scheduleTask(in: timeout) {
                guard !done.value else { return }
                done.value = true
                outer.fail(HTTP2ClientError("no response within \(timeout)"))
            }
            promise.futureResult.whenComplete { result in
                timer.cancel()
                guard !done.value else { return }
                done.value = true
                outer.completeWith(result)
            }
        }
        return try await outer.futureResult.get()
    }

    /// Opens a long-lived request stream: write body chunks as you go, read response chunks as
    /// they arrive (e.g. a bulk partner's batches and their acks).
    public func openStream(method: String = "POST", path: String, headers: [(String, String)] = []) async throws -> HTTP2StreamHandle {
        let handler = self.handler
        let (chunks, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let promise = channel.eventLoop.makePromise(of: Int32.self)
        channel.eventLoop.execute {
            handler.value.startStreaming(method: method, path: path, headers: headers, chunks: continuation, promise: promise)
        }
        let id = try await promise.futureResult.get()
        return HTTP2StreamHandle(id: id, handler: handler, chunks: chunks)
    }

    /// Whether the connection is still open (a server may close an idle one).
    public var isActive: Bool { channel.isActive }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }
}

/// Completes `promise` when the TLS handshake does, or fails it with a message a person can act on.
/// It also watches certificate verification (without changing its result) to say *why* a
/// certificate was refused: BoringSSL's own error only says that verification failed.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let promise: EventLoopPromise<Void>
    private let peer: String
    private var done = false
    /// The certificate verification refused last (the leaf is checked last), if any.
    private var refused: (notBefore: Int, notAfter: Int, subject: String)?

    init(promise: EventLoopPromise<Void>, peer: String) {
        self.promise = promise
        self.peer = peer
    }

    /// A `NIOSSLVerificationCallback` that keeps BoringSSL's verdict and notes what it refused.
    func observe(_ result: NIOSSLVerificationResult, _ certificate: NIOSSLCertificate) -> NIOSSLVerificationResult {
        if result == .failed {
            refused = (Int(certificate.notValidBefore), Int(certificate.notValidAfter), certificate.description)
        }
        return result
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls {
            if negotiated == "h2" {
                finish(nil)
            } else {
                finish(HTTP2ClientError("\(peer) did not agree to HTTP/2 over TLS (ALPN chose \(negotiated ?? "nothing"))"))
                context.close(promise: nil)
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { finish(HTTP2ClientError(explain(error))) }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(HTTP2ClientError("TLS handshake with \(peer) failed: the connection closed"))
        context.fireChannelInactive()
    }

    /// Removed (after the handshake, or with a channel whose connect failed): never leave the promise open.
    func handlerRemoved(context: ChannelHandlerContext) {
        finish(HTTP2ClientError("TLS handshake with \(peer) failed: the connection closed"))
    }

    private func finish(_ error: HTTP2ClientError?) {
        guard !done else { return }
        done = true
        if let error { promise.fail(error) } else { promise.succeed(()) }
    }

    private func explain(_ error: any Error) -> String {
        let now = Int(Date().timeIntervalSince1970)
        let why: String
        if let refused {
            let date = { (t: Int) in Date(timeIntervalSince1970: TimeInterval(t)).formatted(.iso8601) }
            if refused.notAfter < now {
                why = "its certificate expired on \(date(refused.notAfter))"
            } else if refused.notBefore > now {
                why = "its certificate is not valid before \(date(refused.notBefore))"
            } else {
                why = "its certificate is not signed by a trusted CA (give the CA's PEM file, e.g. --ca-file)"
            }
        } else if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
            why = "its certificate is not for this host name"
        } else {
            why = "\(error)"
        }
        return "TLS handshake with \(peer) failed: \(why)"
    }
}

extension String {
    /// Whether this is a literal IPv4 or IPv6 address (no SNI is sent for those).
    var isIPAddress: Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, self, &v4) == 1 || inet_pton(AF_INET6, self, &v6) == 1
    }
}

/// One open streaming request (see `HTTP2Client.openStream`).
public struct HTTP2StreamHandle: Sendable {
    /// The HTTP/2 stream id.
    public let id: Int32
    let handler: NIOLoopBound<HTTP2ClientHandler>
    /// Response body chunks, then the end (the stream closed).
    public let chunks: AsyncStream<ByteBuffer>

    /// Sends more body bytes; `end` finishes the request body.
    public func write(_ bytes: [UInt8], end: Bool = false) {
        let handler = self.handler
        let id = self.id
        handler.eventLoop.execute { handler.value.write(stream: id, bytes: bytes, end: end) }
    }

    /// The response status, once headers have arrived.
    public func status() async throws -> Int {
        let handler = self.handler
        let id = self.id
        let promise = handler.eventLoop.makePromise(of: Int.self)
        handler.eventLoop.execute { handler.value.whenStatus(stream: id, promise: promise) }
        return try await promise.futureResult.get()
    }
}

/// The client's channel handler: drives an nghttp2 client session.
final class HTTP2ClientHandler: ChannelInboundHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Exchange {
        var status = 0
        var headers: [(name: String, value: String)] = []
        var body = ByteBuffer()
        var request: [UInt8] = []
        var sent = 0
        var requestEnded = false
        var promise: EventLoopPromise<HTTP2Response>?
        var chunks: AsyncStream<ByteBuffer>.Continuation?
        var statusWaiters: [EventLoopPromise<Int>] = []
        var deferred = false
    }

    private var session: HTTP2Session?
    private var context: ChannelHandlerContext?
    private var exchanges: [Int32: Exchange] = [:]
    /// Statuses of recently closed streams, so `status()` can still answer after a quick reset.
    private var closedStatuses: [Int32: Int] = [:]
    private var failure: HTTP2ClientError?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        do {
            var options = HTTP2Session.Options()
            options.manualFlowControl = false
            let session = try HTTP2Session(role: .client, delegate: self, options: options)
            var settings = HTTP2Session.Settings()
            settings.initialWindowSize = 16 << 20
            try session.submitSettings(settings)
            self.session = session
        } catch {
            failure = HTTP2ClientError("cannot start HTTP/2 session: \(error)")
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(HTTP2ClientError("connection closed"))
        session?.close()
        session = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        session?.close()
        session = nil
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(HTTP2ClientError("connection error: \(error)"))
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let session else { return }
        let ok: Bool = buffer.withUnsafeReadableBytes { bytes in (try? session.receive(bytes)) != nil }
        if !ok {
            failAll(HTTP2ClientError("HTTP/2 protocol error from server"))
            context.close(promise: nil)
            return
        }
        flush()
    }

    private func failAll(_ error: HTTP2ClientError) {
        failure = error
        for (_, e) in exchanges {
            e.promise?.fail(error)
            e.chunks?.finish()
            for w in e.statusWaiters { w.fail(error) }
        }
        exchanges.removeAll()
    }

    private func flush() {
        guard let context, let session else { return }
        var out = context.channel.allocator.buffer(capacity: 0)
        do { try session.drainOutput(into: &out) } catch {
            failAll(HTTP2ClientError("HTTP/2 send failed: \(error)"))
            context.close(promise: nil)
            return
        }
        if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
    }

    private func submit(method: String, path: String, headers extra: [(String, String)], hasBody: Bool) throws -> Int32 {
        guard let session else { throw failure ?? HTTP2ClientError("not connected") }
        var block = HeaderBlock()
        block.add(":method", method)
        block.add(":path", path)
        block.add(":scheme", "http")
        block.add(":authority", "raffled")
        for (name, value) in extra { block.addDynamic(name.lowercased(), value) }
        return try session.submitRequest(headers: block, hasBody: hasBody)
    }

    func start(method: String, path: String, headers: [(String, String)], body: [UInt8]?, promise: EventLoopPromise<HTTP2Response>) {
        do {
            let id = try submit(method: method, path: path, headers: headers, hasBody: body != nil)
            exchanges[id] = Exchange(request: body ?? [], requestEnded: true, promise: promise)
            flush()
        } catch {
            promise.fail(error)
        }
    }

    func startStreaming(
        method: String, path: String, headers: [(String, String)], chunks: AsyncStream<ByteBuffer>.Continuation, promise: EventLoopPromise<Int32>
    ) {
        do {
            let id = try submit(method: method, path: path, headers: headers, hasBody: true)
            exchanges[id] = Exchange(chunks: chunks)
            flush()
            promise.succeed(id)
        } catch {
            chunks.finish()
            promise.fail(error)
        }
    }

    func write(stream: Int32, bytes: [UInt8], end: Bool) {
        guard exchanges[stream] != nil else { return }
        exchanges[stream]?.request.append(contentsOf: bytes)
        if end { exchanges[stream]?.requestEnded = true }
        if exchanges[stream]?.deferred == true {
            exchanges[stream]?.deferred = false
            session?.resumeData(stream: stream)
        }
        flush()
    }

    func whenStatus(stream: Int32, promise: EventLoopPromise<Int>) {
        guard let e = exchanges[stream] else {
            if let status = closedStatuses[stream] { promise.succeed(status) } else {
                promise.fail(failure ?? HTTP2ClientError("stream \(stream) is closed"))
            }
            return
        }
        if e.status != 0 { promise.succeed(e.status) } else { exchanges[stream]?.statusWaiters.append(promise) }
    }

    // MARK: HTTP2SessionDelegate

    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult { .ok }

    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        let n = String(decoding: name, as: UTF8.self)
        let v = String(decoding: value, as: UTF8.self)
        if n == ":status" {
            exchanges[stream]?.status = Int(v) ?? 0
        } else {
            exchanges[stream]?.headers.append((n, v))
        }
        return .ok
    }

    func headersComplete(stream: Int32, endStream: Bool) {
        guard let e = exchanges[stream], e.status != 0, !e.statusWaiters.isEmpty else { return }
        for w in e.statusWaiters { w.succeed(e.status) }
        exchanges[stream]?.statusWaiters.removeAll()
    }

    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        if let chunks = exchanges[stream]?.chunks {
            var b = ByteBuffer()
            b.writeBytes(bytes)
            chunks.yield(b)
        } else {
            exchanges[stream]?.body.writeBytes(bytes)
        }
        return .ok
    }

    func dataFrameComplete(stream: Int32, length: Int, endStream: Bool) {}

    func readBody(stream: Int32, into buffer: UnsafeMutableRawBufferPointer, endOfBody: inout Bool) -> Int? {
        guard let e = exchanges[stream] else {
            endOfBody = true
            return 0
        }
        let available = e.request.count - e.sent
        if available == 0 {
            if e.requestEnded {
                endOfBody = true
                return 0
            }
            exchanges[stream]?.deferred = true
            return nil
        }
        let n = min(available, buffer.count)
        e.request.withUnsafeBytes { src in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[e.sent..<(e.sent + n)])) }
        exchanges[stream]?.sent += n
        if e.sent + n == e.request.count {
            if e.requestEnded {
                endOfBody = true
            } else {
                // A long-lived stream: everything written so far is sent; start the buffer over so it
                // holds only unsent bytes (bounded by what the caller has in flight).
                exchanges[stream]?.request.removeAll(keepingCapacity: true)
                exchanges[stream]?.sent = 0
            }
        }
        return n
    }

    func frameSent(stream: Int32, type: UInt8, endStream: Bool) {}

    func invalidFrame(stream: Int32, type: UInt8) {}

    func streamClosed(stream: Int32, errorCode: UInt32) {
        guard let e = exchanges.removeValue(forKey: stream) else { return }
        if e.chunks != nil && e.status != 0 {
            if closedStatuses.count >= 64 { closedStatuses.removeAll(keepingCapacity: true) }
            closedStatuses[stream] = e.status
        }
        e.promise?.succeed(HTTP2Response(status: e.status, headers: e.headers, body: e.body, resetCode: errorCode))
        e.chunks?.finish()
        for w in e.statusWaiters {
            if e.status != 0 { w.succeed(e.status) } else { w.fail(HTTP2ClientError("stream reset with code \(errorCode)")) }
        }
    }
}
