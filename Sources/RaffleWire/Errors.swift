/// A protocol error code, as carried in an error frame. Open: codes this version does not know
/// can still be carried and classified by range (see `isRetryable`).
///
/// Ranges: `0x00xx` the frame itself is bad; `0x01xx` the request is well-formed but refused;
/// `0x02xx` the server cannot serve it now (retryable).
public struct ProtocolErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The frame does not start with "RF". Connection-level.
    public static let badMagic = ProtocolErrorCode(rawValue: 0x0001)
    /// The header's version is not 1. Connection-level.
    public static let unsupportedVersion = ProtocolErrorCode(rawValue: 0x0002)
    /// A reserved field is not zero.
    public static let nonzeroReserved = ProtocolErrorCode(rawValue: 0x0003)
    /// The frame type is not defined by this version.
    public static let unknownFrameType = ProtocolErrorCode(rawValue: 0x0004)
    /// A critical flag bit (0–7) this version does not define is set.
    public static let unknownFlags = ProtocolErrorCode(rawValue: 0x0005)
    /// The payload length exceeds the receiver's limit. Connection-level.
    public static let frameTooLarge = ProtocolErrorCode(rawValue: 0x0006)
    /// The CRC32C in the header does not match the frame. Connection-level.
    public static let checksumMismatch = ProtocolErrorCode(rawValue: 0x0007)
    /// The transport (UDP) requires a checksum and the frame has none.
    public static let checksumRequired = ProtocolErrorCode(rawValue: 0x0008)
    /// The payload's length or contents do not match the layout of its type.
    public static let malformedPayload = ProtocolErrorCode(rawValue: 0x0009)
    /// An entry batch with zero entries.
    public static let emptyBatch = ProtocolErrorCode(rawValue: 0x000A)
    /// An entry batch with more entries than the receiver's limit.
    public static let tooManyEntries = ProtocolErrorCode(rawValue: 0x000B)
    /// A frame type the receiver's side never receives (e.g. a batch ack sent to a server).
    public static let unexpectedFrameType = ProtocolErrorCode(rawValue: 0x000C)
    /// The input ended (stream end, datagram end) in the middle of a frame.
    public static let truncatedFrame = ProtocolErrorCode(rawValue: 0x000D)

    /// The batch names a raffle the server does not have.
    public static let unknownRaffle = ProtocolErrorCode(rawValue: 0x0101)
    /// The batch costs more than the client's burst allows, so it can never be admitted.
    public static let batchExceedsBurst = ProtocolErrorCode(rawValue: 0x0102)
    /// HTTP/2: a `POST /v1/entries` whose content type is not `application/vnd.raffled.frames`.
    public static let badContentType = ProtocolErrorCode(rawValue: 0x0103)

    /// The server cannot make entries durable now (storage failure). Retryable.
    public static let unavailable = ProtocolErrorCode(rawValue: 0x0201)
    /// The server is shutting down and takes no new work. Retryable.
    public static let shuttingDown = ProtocolErrorCode(rawValue: 0x0202)
    /// An unexpected server fault. Retryable.
    public static let internalError = ProtocolErrorCode(rawValue: 0x0203)

    /// Every code protocol version 1 defines, in table order.
    public static let allDefined: [ProtocolErrorCode] = [
        .badMagic, .unsupportedVersion, .nonzeroReserved, .unknownFrameType, .unknownFlags,
        .frameTooLarge, .checksumMismatch, .checksumRequired, .malformedPayload, .emptyBatch,
        .tooManyEntries, .unexpectedFrameType, .truncatedFrame,
        .unknownRaffle, .batchExceedsBurst, .badContentType,
        .unavailable, .shuttingDown, .internalError,
    ]

    /// Whether a client may retry the same request later: true for the `0x02xx` range, including
    /// codes a later version adds there.
    public var isRetryable: Bool { rawValue >> 8 == 0x02 }

    /// The upper-case name used in PROTOCOL.md and the vectors, or nil for an undefined code.
    public var name: String? {
        switch rawValue {
        case 0x0001: "BAD_MAGIC"
        case 0x0002: "UNSUPPORTED_VERSION"
        case 0x0003: "NONZERO_RESERVED"
        case 0x0004: "UNKNOWN_FRAME_TYPE"
        case 0x0005: "UNKNOWN_FLAGS"
        case 0x0006: "FRAME_TOO_LARGE"
        case 0x0007: "CHECKSUM_MISMATCH"
        case 0x0008: "CHECKSUM_REQUIRED"
        case 0x0009: "MALFORMED_PAYLOAD"
        case 0x000A: "EMPTY_BATCH"
        case 0x000B: "TOO_MANY_ENTRIES"
        case 0x000C: "UNEXPECTED_FRAME_TYPE"
        case 0x000D: "TRUNCATED_FRAME"
        case 0x0101: "UNKNOWN_RAFFLE"
        case 0x0102: "BATCH_EXCEEDS_BURST"
        case 0x0103: "BAD_CONTENT_TYPE"
        case 0x0201: "UNAVAILABLE"
        case 0x0202: "SHUTTING_DOWN"
        case 0x0203: "INTERNAL"
        default: nil
        }
    }

    /// The code with the given PROTOCOL.md name, if defined.
    public init?(name: String) {
        guard let code = Self.allDefined.first(where: { $0.name == name }) else { return nil }
        self = code
    }

    /// The HTTP status a server answers with when this error is the first reply on a stream.
    public var httpStatus: Int {
        switch self {
        case .frameTooLarge, .batchExceedsBurst: 413
        case .unknownRaffle: 404
        case .badContentType: 415
        case .unavailable, .shuttingDown: 503
        case .internalError: 500
        default: rawValue >> 8 == 0x02 ? 503 : 400
        }
    }

    public var description: String {
        name ?? "0x" + String(rawValue, radix: 16, uppercase: true)
    }
}

/// A malformed or refused frame: what a decoder throws, and what a server reports in an error frame.
///
/// `skippableLength` tells a stream receiver how to go on: when non-nil, the frame's length was
/// trustworthy, so skipping that many bytes reaches the next frame (frame-level error); when nil, the
/// byte stream cannot be resynchronised and the connection (or HTTP/2 stream) must be answered and
/// closed (connection-level error).
public struct ProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The wire code.
    public var code: ProtocolErrorCode
    /// A human-readable explanation naming the offending value and the limit.
    public var message: String
    /// The request id from the frame header, or 0 when the header could not be read.
    public var requestID: UInt64
    /// Bytes to skip to reach the next frame, or nil for a connection-level error.
    public var skippableLength: Int?

    /// Creates an error.
    public init(code: ProtocolErrorCode, message: String, requestID: UInt64 = 0, skippableLength: Int? = nil) {
        self.code = code
        self.message = message
        self.requestID = requestID
        self.skippableLength = skippableLength
    }

    /// Whether the stream must be closed after answering (the framing is lost).
    public var isConnectionLevel: Bool { skippableLength == nil }

    public var description: String { "\(code): \(message)" }
}
