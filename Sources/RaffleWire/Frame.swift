/// A frame as an owned value: what clients build and read, and what tests compare. The server's
/// entry path never materialises this (it reads `FrameView`s in place).
public struct Frame: Hashable, Sendable {
    /// The client-chosen request id, echoed by every reply.
    public var requestID: UInt64
    /// Header flags. When `.checksum` is set the encoder fills in the CRC32C.
    public var flags: FrameFlags
    /// Type and payload.
    public var body: Body

    /// A frame's type and payload.
    public enum Body: Hashable, Sendable {
        /// Client → server: entries for one raffle.
        case entryBatch(raffleID: UInt64, entries: [Entry])
        /// Server → client: one outcome per entry of the batch with the same request id.
        case batchAck(raffleID: UInt64, outcomes: [EntryOutcome])
        /// Server → client: not admitted; retry after this many milliseconds.
        case throttled(retryAfterMilliseconds: UInt32, reason: ThrottleReason)
        /// Server → client: an error code and message (at most 1,024 UTF-8 bytes; longer is cut).
        case error(code: ProtocolErrorCode, message: String)
        /// Client → server: 8 opaque bytes as a little-endian integer.
        case ping(UInt64)
        /// Server → client: the ping's bytes echoed.
        case pong(UInt64)
    }

    /// Creates a frame.
    public init(requestID: UInt64, flags: FrameFlags = [], body: Body) {
        self.requestID = requestID
        self.flags = flags
        self.body = body
    }

    /// The frame type of `body`.
    public var type: FrameType {
        switch body {
        case .entryBatch: .entryBatch
        case .batchAck: .batchAck
        case .throttled: .throttled
        case .error: .error
        case .ping: .ping
        case .pong: .pong
        }
    }

    /// Copies a decoded view into an owned frame.
    public init(_ view: FrameView) {
        let body: Body
        switch view.payload {
        case .entryBatch(let batch): body = .entryBatch(raffleID: batch.raffleID, entries: Array(batch))
        case .batchAck(let ack): body = .batchAck(raffleID: ack.raffleID, outcomes: Array(ack))
        case .throttled(let ms, let reason): body = .throttled(retryAfterMilliseconds: ms, reason: reason)
        case .error(let error): body = .error(code: error.code, message: error.message)
        case .ping(let value): body = .ping(value)
        case .pong(let value): body = .pong(value)
        }
        self.init(requestID: view.header.requestID, flags: view.header.flags, body: body)
    }
}

extension FrameDecoder {
    /// Decodes every whole frame in `bytes` (a reply body) into owned frames, treating the end of
    /// `bytes` as the end of input (a partial frame at the end is `TRUNCATED_FRAME`).
    public func decodeAll(_ bytes: [UInt8]) throws(ProtocolError) -> [Frame] {
        try decodeFrames(bytes, endOfInput: true).frames
    }

    /// Decodes the whole frames at the start of `bytes` (a stream read so far) and says how many
    /// bytes they took; the rest is an incomplete frame to keep until more arrives. With
    /// `endOfInput`, an incomplete tail is an error (`TRUNCATED_FRAME`).
    public func decodeFrames(_ bytes: [UInt8], endOfInput: Bool = false) throws(ProtocolError) -> (frames: [Frame], consumed: Int) {
        var frames: [Frame] = []
        var offset = 0
        while offset < bytes.count {
            let next: Result<(Frame, Int)?, ProtocolError> = bytes.withUnsafeBytes { raw in
                do throws(ProtocolError) {
                    guard let view = try decode(UnsafeRawBufferPointer(rebasing: raw[offset...]), endOfInput: endOfInput) else { return .success(nil) }
                    return .success((Frame(view), view.frameLength))
                } catch {
                    return .failure(error)
                }
            }
            guard let (frame, length) = try next.get() else { break }
            frames.append(frame)
            offset += length
        }
        return (frames, offset)
    }
}
