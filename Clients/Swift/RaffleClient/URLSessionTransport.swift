public import Foundation
#if canImport(FoundationNetworking)
public import FoundationNetworking
#endif
import RaffleWire

/// `RaffleTransport` over Foundation's `URLSession`: what an iOS or macOS app uses, with nothing but
/// the system's networking — HTTP/2 over TLS on Apple platforms (ALPN), and on Linux through
/// FoundationNetworking (libcurl), HTTP/1.1 or HTTP/2 as it negotiates. TLS trust is the system's:
/// on Apple platforms the device's trust store (and App Transport Security), on Linux the system CA
/// bundle.
///
/// ```swift
/// let client = RaffleClient(transport: URLSessionTransport(baseURL: URL(string: "https://raffle.example.com")!))
/// let outcome = try await client.enter(user: 42, raffle: 7)
/// ```
///
/// URLSession has no request body that stays open while replies come back, so a bulk stream
/// (`RaffleClient.bulkStream`) sends each batch as its own `POST /v1/entries` — several in flight at
/// once, replies delivered in order — with the same acknowledgements. Bulk partners moving millions
/// of entries should prefer the NIO transports (`RaffleClientNIO`), which keep one HTTP/2 stream.
public final class URLSessionTransport: RaffleTransport {
    /// The server, e.g. `https://raffle.example.com` or `https://10.0.0.5:8080`.
    public let baseURL: URL
    private let session: URLSession
    private let ownsSession: Bool

    /// A transport to `baseURL` using `session` (default: a new ephemeral session, closed by `close()`).
    public init(baseURL: URL, session: URLSession? = nil) {
        self.baseURL = baseURL
        if let session {
            self.session = session
            ownsSession = false
        } else {
            let configuration = URLSessionConfiguration.ephemeral
            configuration.httpMaximumConnectionsPerHost = 8
            self.session = URLSession(configuration: configuration)
            ownsSession = true
        }
    }

    /// A transport to `https://host:port` (or `http://` when `secure` is false: plaintext is for
    /// development only, and Apple platforms' App Transport Security refuses it by default).
    public convenience init(host: String, port: Int, secure: Bool = true) {
        let literal = host.contains(":") ? "[\(host)]" : host
        self.init(baseURL: URL(string: "\(secure ? "https" : "http")://\(literal):\(port)")!)
    }

    public func send(frames: [UInt8], authorization: String?) async throws -> FramesReply {
        try await send(frames: frames, authorization: authorization, timeout: nil)
    }

    /// Sends with URLSession's own per-request timeout (no timer task per request).
    public func send(frames: [UInt8], authorization: String?, timeout: Duration) async throws -> FramesReply {
        try await send(frames: frames, authorization: authorization, timeout: Optional(timeout))
    }

    private func send(frames: [UInt8], authorization: String?, timeout: Duration?) async throws -> FramesReply {
        var request = URLRequest(url: baseURL.appendingPathComponent(String(Wire.entriesPath.dropFirst())))
        request.httpMethod = "POST"
        request.setValue(Wire.contentType, forHTTPHeaderField: "content-type")
        if let authorization { request.setValue(authorization, forHTTPHeaderField: "authorization") }
        if let timeout { request.timeoutInterval = max(Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18, 0.001) }
        request.httpBody = Data(frames)
        let (status, body) = try await perform(request)
        return FramesReply(status: status, body: body)
    }

    public func admin(method: String, path: String, body: [UInt8]?, authorization: String?) async throws -> AdminReply {
        guard let url = URL(string: path, relativeTo: baseURL) else {
            throw RaffleClientError(.invalidRequest, "not a path: \(path)")
        }
        var request = URLRequest(url: url)
        request.httpMethod = method
        if let body {
            request.httpBody = Data(body)
            request.setValue("application/json", forHTTPHeaderField: "content-type")
        }
        if let authorization { request.setValue(authorization, forHTTPHeaderField: "authorization") }
        let (status, reply) = try await perform(request)
        return AdminReply(status: status, body: reply)
    }

    public func openStream(authorization: String?) async throws -> any FrameStream {
        RequestPerBatchStream(transport: self, authorization: authorization)
    }

    public func close() async {
        if ownsSession { session.finishTasksAndInvalidate() }
    }

    private func perform(_ request: URLRequest) async throws -> (Int, [UInt8]) {
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch let error as URLError {
            let kind: RaffleClientError.Kind = error.code == .timedOut ? .timedOut : .connectionFailed
            throw RaffleClientError(kind, "\(request.httpMethod ?? "GET") \(request.url?.absoluteString ?? "?") failed: \(error.localizedDescription) (URLError \(error.code.rawValue))")
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw RaffleClientError(.connectionFailed, "\(request.url?.absoluteString ?? "?") failed: \(error)")
        }
        guard let http = response as? HTTPURLResponse else {
            throw RaffleClientError(.invalidResponse, "not an HTTP response from \(baseURL)")
        }
        return (http.statusCode, Array(data))
    }
}

/// A bulk stream over URLSession: each `write` is its own request, several in flight, their reply
/// bytes yielded in the order written. A failed request ends the stream (the bulk stream then
/// resends what was not acknowledged, as after a lost connection).
final class RequestPerBatchStream: FrameStream {
    let replies: AsyncStream<[UInt8]>
    private let continuation: AsyncStream<[UInt8]>.Continuation
    private let transport: URLSessionTransport
    private let authorization: String?
    /// The last request's task: each waits for the one before it before yielding, so replies stay in order.
    private let last = Locked<Task<Bool, Never>?>(nil)

    init(transport: URLSessionTransport, authorization: String?) {
        self.transport = transport
        self.authorization = authorization
        (replies, continuation) = AsyncStream<[UInt8]>.makeStream()
    }

    func write(_ frames: [UInt8]) {
        let (transport, authorization, continuation) = (self.transport, self.authorization, self.continuation)
        last.withLock { previous in
            let before = previous
            previous = Task {
                let reply: FramesReply? = try? await transport.send(frames: frames, authorization: authorization)
                guard await before?.value ?? true, let reply else {
                    continuation.finish()
                    return false
                }
                continuation.yield(reply.body)
                return true
            }
        }
    }

    func finish() {
        let continuation = self.continuation
        last.withLock { previous in
            let before = previous
            previous = Task {
                _ = await before?.value
                continuation.finish()
                return false
            }
        }
    }
}
