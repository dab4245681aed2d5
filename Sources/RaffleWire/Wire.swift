/// Constants of raffled's wire protocol, version 1. `Protocol/PROTOCOL.md` is the normative text;
/// every number here appears there once.
public enum Wire {
    /// The two bytes every frame starts with: ASCII "RF".
    public static let magic: (UInt8, UInt8) = (0x52, 0x46)
    /// The only protocol version this implementation speaks.
    public static let version: UInt8 = 1
    /// Size of the fixed frame header in bytes.
    public static let headerSize = 24
    /// Size of the fixed part of an entry-batch or batch-ack payload (raffle id, count, one more word).
    public static let batchPrefixSize = 16
    /// Size of one entry record in an entry batch.
    public static let entrySize = 16
    /// Size of a throttled payload.
    public static let throttledSize = 8
    /// Size of a ping or pong payload.
    public static let pingSize = 8
    /// Size of the fixed part of an error payload (code, reserved) before the message.
    public static let errorPrefixSize = 4
    /// Longest error message, in UTF-8 bytes.
    public static let maxErrorMessageBytes = 1024
    /// Largest payload any v1 receiver may be configured to accept (16 MiB).
    public static let absoluteMaxPayloadBytes = 16 * 1024 * 1024
    /// The HTTP/2 content type of a request or response body made of frames.
    public static let contentType = "application/vnd.raffled.frames"
    /// The HTTP/2 path entry batches are posted to.
    public static let entriesPath = "/v1/entries"
}

/// Frame types. Open: a value not listed here is representable, so a decoder can name it in an
/// `unknownFrameType` error.
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Client → server: one raffle, N fixed-size entry records.
    public static let entryBatch = FrameType(rawValue: 0x01)
    /// Server → client: per-entry outcomes of one entry batch.
    public static let batchAck = FrameType(rawValue: 0x02)
    /// Server → client: the request was not admitted; retry after the given milliseconds.
    public static let throttled = FrameType(rawValue: 0x03)
    /// Server → client: an error code and a UTF-8 message.
    public static let error = FrameType(rawValue: 0x04)
    /// Client → server: liveness probe with 8 opaque bytes.
    public static let ping = FrameType(rawValue: 0x05)
    /// Server → client: the answer to a ping, echoing its 8 bytes.
    public static let pong = FrameType(rawValue: 0x06)

    /// Whether this type is defined by protocol version 1.
    public var isKnown: Bool { (0x01...0x06).contains(rawValue) }

    /// Whether a client may send this type to a server (entry batch, ping).
    public var isClientToServer: Bool { self == .entryBatch || self == .ping }

    /// The name PROTOCOL.md and the test vectors use (`entry_batch`, …), or `0xNN` if unknown.
    public var description: String {
        switch rawValue {
        case 0x01: "entry_batch"
        case 0x02: "batch_ack"
        case 0x03: "throttled"
        case 0x04: "error"
        case 0x05: "ping"
        case 0x06: "pong"
        default: "0x" + String(rawValue, radix: 16, uppercase: true)
        }
    }
}

/// The header's 16-bit flag word. Bits 0–7 are *critical*: a receiver that does not know a set
/// critical bit rejects the frame (`unknownFlags`). Bits 8–15 are *advisory*: unknown ones are ignored.
public struct FrameFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The header's checksum field holds the CRC32C of the frame (required on UDP).
    public static let checksum = FrameFlags(rawValue: 1 << 0)

    /// Critical bits this implementation understands.
    public static let knownCritical: FrameFlags = [.checksum]
    /// Mask of the critical bits (0–7).
    public static let criticalMask = FrameFlags(rawValue: 0x00FF)
}

/// Why a request was throttled. Open, like every wire enumeration.
public struct ThrottleReason: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The client's (or the global) token bucket is empty.
    public static let rateLimited = ThrottleReason(rawValue: 1)
    /// The server's own ingest buffers or log backlog are past their high-water mark.
    public static let serverBusy = ThrottleReason(rawValue: 2)
    /// The retry-after is a slot in the server's admission schedule (virtual waiting room).
    public static let waitingRoom = ThrottleReason(rawValue: 3)

    public var description: String {
        switch rawValue {
        case 1: "rate_limited"
        case 2: "server_busy"
        case 3: "waiting_room"
        default: "reason_\(rawValue)"
        }
    }
}

/// Size limits a decoder enforces. Defaults are the v1 minimums every receiver accepts.
public struct FrameLimits: Hashable, Sendable {
    /// Largest payload accepted, in bytes; checked from the header before any payload is buffered.
    /// Default 65,552 (a full batch of 4,096 entries). Clamped to `Wire.absoluteMaxPayloadBytes`.
    public var maxPayloadBytes: Int
    /// Most entries one batch may carry. Default 4,096.
    public var maxEntriesPerBatch: Int

    /// Creates limits; values are clamped to what the protocol allows.
    public init(maxPayloadBytes: Int = 65_552, maxEntriesPerBatch: Int = 4_096) {
        self.maxPayloadBytes = min(max(maxPayloadBytes, 0), Wire.absoluteMaxPayloadBytes)
        self.maxEntriesPerBatch = max(maxEntriesPerBatch, 0)
    }

    /// The v1 defaults: 65,552 payload bytes, 4,096 entries per batch.
    public static let `default` = FrameLimits()

    /// Limits for one UDP datagram of at most `datagramBytes` bytes (default 1,200): 72 entries.
    public static func datagram(maxBytes datagramBytes: Int = 1_200) -> FrameLimits {
        let payload = max(datagramBytes - Wire.headerSize, 0)
        return FrameLimits(
            maxPayloadBytes: payload,
            maxEntriesPerBatch: max(payload - Wire.batchPrefixSize, 0) / Wire.entrySize
        )
    }
}
