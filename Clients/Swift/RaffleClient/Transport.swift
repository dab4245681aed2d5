/// A reply to one request carrying frames.
public struct FramesReply: Sendable {
    /// HTTP status (or 200 on transports without one).
    public var status: Int
    /// The reply frames, back to back.
    public var body: [UInt8]

    public init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }
}

/// A JSON admin reply.
public struct AdminReply: Sendable {
    public var status: Int
    public var body: [UInt8]

    public init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }
}

/// How `RaffleClient` reaches a server. The client's batching, retry and codec logic sits above this
/// and has no NIO dependency: an HTTP/2 transport on SwiftNIO + nghttp2 ships as
/// `RaffleClientHTTP2`; a URLSession transport for Apple platforms can implement the same.
///
/// Implementations throw `RaffleClientError` with `.connectionFailed` / `.timedOut` for failures that
/// a retry may cure.
public protocol RaffleTransport: Sendable {
    /// Sends one request whose body is `frames` to `POST /v1/entries` and returns the reply.
    func send(frames: [UInt8], authorization: String?) async throws -> FramesReply
    /// The same, giving up with `RaffleClientError(.timedOut)` after `timeout`. The default runs
    /// `send(frames:authorization:)` against a timer task; a transport with its own timers (an
    /// event loop's scheduled tasks) should implement it — a timer task per request is the costliest
    /// part of a small request on the client side.
    func send(frames: [UInt8], authorization: String?, timeout: Duration) async throws -> FramesReply
    /// Calls the JSON admin API.
    func admin(method: String, path: String, body: [UInt8]?, authorization: String?) async throws -> AdminReply
    /// Opens a long-lived entries stream (bulk partners).
    func openStream(authorization: String?) async throws -> any FrameStream
    /// Closes connections.
    func close() async
    /// Whether frames must carry a CRC32C (UDP: PROTOCOL.md §13). Default false.
    var requiresChecksum: Bool { get }
}

extension RaffleTransport {
    public var requiresChecksum: Bool { false }

    public func send(frames: [UInt8], authorization: String?, timeout: Duration) async throws -> FramesReply {
        try await withAttemptTimeout(timeout) { try await self.send(frames: frames, authorization: authorization) }
    }
}

/// Runs `body`, failing with `.timedOut` if it has not finished after `timeout` (a timer task races it).
func withAttemptTimeout<T: Sendable>(_ timeout: Duration, _ body: @Sendable @escaping () async throws -> T) async throws -> T {
    let result: Result<T, any Error> = await withTaskGroup(of: Result<T, any Error>?.self) { group in
        group.addTask {
            do { return .success(try await body()) } catch { return .failure(error) }
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return Task.isCancelled ? nil : .failure(RaffleClientError(.timedOut, "no answer within \(timeout)"))
        }
        var outcome: Result<T, any Error> = .failure(RaffleClientError(.timedOut, "no answer within \(timeout)"))
        for await next in group {
            if let next {
                outcome = next
                break
            }
        }
        group.cancelAll()
        return outcome
    }
    return try result.get()
}

/// One long-lived request stream: write frames as you go, read reply bytes as they arrive.
public protocol FrameStream: Sendable {
    /// Sends frames.
    func write(_ frames: [UInt8])
    /// Ends the request body.
    func finish()
    /// Reply bytes, in order; ends when the stream closes (normally or not).
    var replies: AsyncStream<[UInt8]> { get }
}
