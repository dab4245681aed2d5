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

/// The status and body of a response (`HTTP2Client.exchange`).
public struct HTTP2Reply: Sendable {
    /// `:status` (0 if the stream was reset before one came).
    public var status: Int
    /// The whole body.
    public var body: [UInt8]
    /// The HTTP/2 error code if the stream was reset (0: ended normally).
    public var resetCode: UInt32
}

/// The method, path and header fields of a request, prepared once and reused for many requests
/// (e.g. every entries POST of a client with one API key). A class: a request in flight holds one
/// reference to it, where a struct of three strings and two arrays cost ~6 retains per copy and
/// ~100 bytes in each async frame that passed it on (issue #15).
public final class HTTP2RequestHead: Sendable {
    public let method: String
    public let path: String
    /// Header fields, names lower-cased.
    public let headers: [(name: String, value: String)]

    /// The whole header block (pseudo-headers first), encoded once: a request copies nothing.
    let block: HeaderBlock

    /// A head; header names are lower-cased here.
    public init(method: String, path: String, headers: [(String, String)] = []) {
        self.method = method
        self.path = path
        self.headers = headers.map { ($0.0.lowercased(), $0.1) }
        var block = HeaderBlock()
        block.add(":method", method)
        block.add(":path", path)
        block.add(":scheme", "http")
        block.add(":authority", "raffled")
        for field in self.headers { block.addDynamic(field.name, field.value) }
        self.block = block
    }
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
    private let queue = RequestQueue()

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
    /// `HTTP2ClientError` ("no response within …") if none came in time, resetting the stream.
    public func request(
        method: String, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil, timeout: TimeAmount? = nil
    ) async throws -> HTTP2Response {
        let head = HTTP2RequestHead(method: method, path: path, headers: headers)
        let deadline = timeout.map { NIODeadline.now() + $0 }
        return try await withUnsafeThrowingContinuation { continuation in
            enqueue(PendingRequest(head: head, body: body, deadline: deadline, reply: .response(continuation)))
        }
    }

    /// Sends a request made from a prepared `head` and waits for the status and body only — the
    /// lean path `RaffleClient` uses for entries: no header strings are built for the reply, the
    /// request joins others queued meanwhile (one event-loop wake-up and one socket write for the
    /// lot), and its deadline is checked by the connection's sweep (see `deadlineSweep`), not by a
    /// timer of its own.
    /// - Throws: `HTTP2ClientError` ("no response within …" after `timeout`, or the connection's failure).
    public func exchange(_ head: HTTP2RequestHead, body: [UInt8]?, timeout: TimeAmount? = nil) async throws -> HTTP2Reply {
        try await withUnsafeThrowingContinuation { continuation in
            enqueue(head, body, timeout, .bytes(continuation))
        }
    }

    /// Queues a request with its deadline (out of line: the request is built on the thread's stack,
    /// not in the caller's async frame).
    @inline(never)
    private func enqueue(_ head: HTTP2RequestHead, _ body: [UInt8]?, _ timeout: TimeAmount?, _ reply: ReplyWaiter) {
        enqueue(PendingRequest(head: head, body: body, deadline: timeout.map { NIODeadline.now() + $0 }, reply: reply))
    }

    private func enqueue(_ request: PendingRequest) {
        guard queue.append(request) else { return }
        let (queue, handler) = (self.queue, self.handler)
        channel.eventLoop.execute {
            let batch = queue.take()
            handler.value.start(batch)
            queue.recycle(consume batch)
        }
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
