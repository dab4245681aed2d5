import NIOConcurrencyHelpers
public import NIOCore
import NIOPosix
public import NIOSSL
public import RaffleClient
import RaffleHTTP2Client
import RaffleWire

/// `RaffleTransport` over HTTP/2 with SwiftNIO and libnghttp2 — the same glue the server uses — in
/// cleartext (h2c, prior knowledge) or over TLS (ALPN `h2`). One connection, many multiplexed
/// streams; after a failure the next call reconnects.
public final class HTTP2Transport: RaffleTransport {
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let tls: NIOSSLContext?
    private let connection = SharedConnection<HTTP2Client>()
    /// The last entries head made, by authorization (a client sends with one key).
    private let heads = NIOLockedValueBox<(authorization: String?, head: HTTP2RequestHead)?>(nil)

    /// A cleartext (h2c) transport to `host:port`; connections are made on first use on `group`
    /// (default: NIO's shared singleton group).
    public init(host: String, port: Int, group: (any EventLoopGroup)? = nil) {
        self.host = host
        self.port = port
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        tls = nil
    }

    /// A transport over TLS. `tls` defaults to `HTTP2Transport.tlsConfiguration()` (the system's
    /// trust store, ALPN `h2`); give `tlsConfiguration(caFile:)` for a private CA.
    /// - Throws: NIOSSL's error when the configuration cannot be used (e.g. an unreadable CA file).
    public init(host: String, port: Int, tls: TLSConfiguration, group: (any EventLoopGroup)? = nil) throws {
        self.host = host
        self.port = port
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        self.tls = try NIOSSLContext(configuration: tls)
    }

    /// A TLS configuration for raffled: ALPN `h2`, TLS 1.2 or later, the system's trust store plus
    /// `caFile` (PEM) when given.
    public static func tlsConfiguration(caFile: String? = nil) -> TLSConfiguration {
        HTTP2Client.clientTLSConfiguration(caFile: caFile)
    }

    private func client() async throws -> HTTP2Client {
        if let c = connection.ready(usable: { $0.isActive }) { return c }
        return try await connect()
    }

    /// Makes the shared connection (or waits for the connect under way): the rare path of `client()`.
    @inline(never)
    private func connect() async throws -> HTTP2Client {
        let (host, port, group, tls) = (self.host, self.port, self.group, self.tls)
        return try await connection.get(usable: { $0.isActive }) {
            do { return try await HTTP2Client.connect(host: host, port: port, group: group, tls: tls) } catch let error as HTTP2ClientError {
                throw RaffleClientError(.connectionFailed, error.message)
            } catch {
                throw RaffleClientError(.connectionFailed, "cannot connect to \(host):\(port): \(error)")
            }
        }
    }

    private func forget(_ failed: HTTP2Client) async {
        if connection.forget(failed) { await failed.close() }
    }

    private func request(
        method: String, path: String, headers: [(String, String)], body: [UInt8]?, timeout: Duration? = nil, again: Bool = true
    ) async throws -> HTTP2Response {
        let c = try await client()
        do {
            return try await c.request(method: method, path: path, headers: headers, body: body, timeout: timeout.map(Self.timeAmount))
        } catch let error as HTTP2ClientError where error.message.hasPrefix("no response within") {
            throw RaffleClientError(.timedOut, "\(error) from \(host):\(port)")
        } catch {
            await forget(c)
            // A read on a connection the server was closing meanwhile (its idle timeout, a restart):
            // once more on a new connection. (Entries are retried by RaffleClient's own policy.)
            if again && method == "GET" {
                return try await request(method: method, path: path, headers: headers, body: body, timeout: timeout, again: false)
            }
            throw RaffleClientError(.connectionFailed, "request to \(host):\(port) failed: \(error)")
        }
    }

    public func send(frames: [UInt8], authorization: String?) async throws -> FramesReply {
        try await send(frames: frames, authorization: authorization, deadline: nil)
    }

    /// Sends with an event-loop timer for the timeout (no timer task per request).
    public func send(frames: [UInt8], authorization: String?, timeout: Duration) async throws -> FramesReply {
        try await send(frames: frames, authorization: authorization, deadline: Self.timeAmount(timeout))
    }

    /// The entries path. It keeps little across its awaits, and its failures are handled out of line
    /// (`failed`): the async frames a task allocates for a call stay small (issue #15).
    private func send(frames: [UInt8], authorization: String?, deadline timeout: TimeAmount?) async throws -> FramesReply {
        let c: HTTP2Client
        if let ready = connection.ready(usable: { $0.isActive }) { c = ready } else { c = try await connect() }
        let reply: HTTP2Reply
        do { reply = try await c.exchange(entriesHead(authorization), body: frames, timeout: timeout) } catch {
            throw await failed(c, error)
        }
        return FramesReply(status: reply.status, body: reply.body)
    }

    /// The error an entries request that failed on `c` reports; a connection failure also drops `c`
    /// (the next call reconnects).
    @inline(never)
    private func failed(_ c: HTTP2Client, _ error: any Error) async -> RaffleClientError {
        if let error = error as? HTTP2ClientError, error.message.hasPrefix("no response within") {
            return RaffleClientError(.timedOut, "\(error) from \(host):\(port)")
        }
        await forget(c)
        return RaffleClientError(.connectionFailed, "request to \(host):\(port) failed: \(error)")
    }

    /// The entries POST's head for `authorization`, made once per key rather than per request.
    private func entriesHead(_ authorization: String?) -> HTTP2RequestHead {
        heads.withLockedValue { cache in
            if let cached = cache, cached.authorization == authorization { return cached.head }
            var headers = [("content-type", Wire.contentType)]
            if let authorization { headers.append(("authorization", authorization)) }
            let head = HTTP2RequestHead(method: "POST", path: Wire.entriesPath, headers: headers)
            cache = (authorization, head)
            return head
        }
    }

    private static func timeAmount(_ d: Duration) -> TimeAmount {
        .nanoseconds(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
    }

    public func admin(method: String, path: String, body: [UInt8]?, authorization: String?) async throws -> AdminReply {
        var headers: [(String, String)] = body == nil ? [] : [("content-type", "application/json")]
        if let authorization { headers.append(("authorization", authorization)) }
        let r = try await request(method: method, path: path, headers: headers, body: body)
        return AdminReply(status: r.status, body: Array(r.body.readableBytesView))
    }

    public func openStream(authorization: String?) async throws -> any FrameStream {
        var headers = [("content-type", Wire.contentType)]
        if let authorization { headers.append(("authorization", authorization)) }
        let c = try await client()
        do {
            return HTTP2FrameStream(handle: try await c.openStream(path: Wire.entriesPath, headers: headers))
        } catch {
            await forget(c)
            throw RaffleClientError(.connectionFailed, "cannot open a stream to \(host):\(port): \(error)")
        }
    }

    public func close() async {
        if let c = connection.take() { await c.close() }
    }
}

struct HTTP2FrameStream: FrameStream {
    let handle: HTTP2StreamHandle
    let replies: AsyncStream<[UInt8]>

    init(handle: HTTP2StreamHandle) {
        self.handle = handle
        let chunks = handle.chunks
        replies = AsyncStream { continuation in
            let task = Task {
                for await chunk in chunks { continuation.yield(Array(chunk.readableBytesView)) }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    func write(_ frames: [UInt8]) { handle.write(frames) }
    func finish() { handle.write([], end: true) }
}
