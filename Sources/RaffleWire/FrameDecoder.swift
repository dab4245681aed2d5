/// Decodes frames in place from raw bytes. A value type with no buffers of its own: the caller owns
/// the bytes (a ByteBuffer, a preallocated pool slot, a datagram) and the decoder only reads them.
///
/// `decode(_:)` returns `nil` when more bytes are needed, a `FrameView` over the bytes when a whole
/// frame is there, and throws a `ProtocolError` for anything malformed. The payload length is
/// checked against `limits` as soon as the 24-byte header is in, before any payload is waited for.
///
/// Checks run in the order PROTOCOL.md gives ("Receiving a frame"), so every implementation reports
/// the same error for the same bytes.
public struct FrameDecoder: Hashable, Sendable {
    /// Which side is reading: decides which frame types are expected.
    public enum Receiver: Hashable, Sendable {
        /// A server: accepts entry batches and pings.
        case server
        /// A client: accepts batch acks, throttled, error and pong frames.
        case client
        /// Accepts every defined type (tools, tests).
        case any
    }

    /// Size limits; default `FrameLimits.default`.
    public var limits: FrameLimits
    /// Which frame types are expected; default `.any`.
    public var receiver: Receiver
    /// Whether a frame without a checksum is refused (`CHECKSUM_REQUIRED`), as on UDP. Default false.
    public var requireChecksum: Bool

    /// Creates a decoder.
    public init(limits: FrameLimits = .default, receiver: Receiver = .any, requireChecksum: Bool = false) {
        self.limits = limits
        self.receiver = receiver
        self.requireChecksum = requireChecksum
    }

    /// Reads and checks the header at the start of `bytes` (magic, version, reserved, length limit).
    /// Returns nil when fewer than 24 bytes are there, unless `endOfInput` says none will follow
    /// (then a non-empty remainder is `TRUNCATED_FRAME`).
    public func decodeHeader(_ bytes: UnsafeRawBufferPointer, endOfInput: Bool = false) throws(ProtocolError) -> FrameHeader? {
        guard bytes.count >= Wire.headerSize else {
            if endOfInput && !bytes.isEmpty {
                throw ProtocolError(
                    code: .truncatedFrame,
                    message: "input ended after \(bytes.count) bytes, inside a frame header (24 bytes)")
            }
            return nil
        }
        guard bytes[0] == Wire.magic.0, bytes[1] == Wire.magic.1 else {
            throw ProtocolError(
                code: .badMagic,
                message: "frame starts with 0x\(hex(bytes[0]))\(hex(bytes[1])), expected 0x5246 (\"RF\")")
        }
        let version = bytes[2]
        guard version == Wire.version else {
            throw ProtocolError(
                code: .unsupportedVersion,
                message: "protocol version \(version) is not supported; this receiver speaks version 1")
        }
        let requestID = bytes.le64(12)
        let reserved = bytes.le16(6)
        guard reserved == 0 else {
            throw ProtocolError(
                code: .nonzeroReserved, message: "header reserved field is 0x\(String(reserved, radix: 16)), must be 0",
                requestID: requestID)
        }
        let length = bytes.le32(8)
        guard Int(length) <= limits.maxPayloadBytes else {
            throw ProtocolError(
                code: .frameTooLarge,
                message: "payload length \(length) exceeds this receiver's limit of \(limits.maxPayloadBytes) bytes",
                requestID: requestID)
        }
        return FrameHeader(
            version: version, type: FrameType(rawValue: bytes[3]), flags: FrameFlags(rawValue: bytes.le16(4)),
            payloadLength: length, requestID: requestID, checksum: bytes.le32(20))
    }

    /// Decodes the frame at the start of `bytes`. Returns nil when more bytes are needed (unless
    /// `endOfInput`, which turns a partial frame into `TRUNCATED_FRAME`). The returned view borrows
    /// `bytes`; advance by its `frameLength` to reach the next frame.
    public func decode(_ bytes: UnsafeRawBufferPointer, endOfInput: Bool = false) throws(ProtocolError) -> FrameView? {
        guard let header = try decodeHeader(bytes, endOfInput: endOfInput) else { return nil }
        let total = header.frameLength
        let id = header.requestID
        guard bytes.count >= total else {
            if endOfInput {
                throw ProtocolError(
                    code: .truncatedFrame,
                    message: "input ended after \(bytes.count) of the frame's \(total) bytes", requestID: id)
            }
            return nil
        }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[Wire.headerSize..<total])

        if header.flags.contains(.checksum) {
            let computed = CRC32C.frameChecksum(header: bytes, payload: payload)
            guard computed == header.checksum else {
                throw ProtocolError(
                    code: .checksumMismatch,
                    message: "checksum 0x\(hex32(header.checksum)) does not match the frame's CRC32C 0x\(hex32(computed))",
                    requestID: id)
            }
        } else {
            guard header.checksum == 0 else {
                throw frameError(.nonzeroReserved, "checksum field is set but the checksum flag is not", header)
            }
            guard !requireChecksum else {
                throw frameError(.checksumRequired, "this transport requires the checksum flag and a CRC32C", header)
            }
        }
        let unknownFlags = header.flags.rawValue & FrameFlags.criticalMask.rawValue & ~FrameFlags.knownCritical.rawValue
        guard unknownFlags == 0 else {
            throw frameError(.unknownFlags, "unknown critical flag bits 0x\(String(unknownFlags, radix: 16))", header)
        }
        let type = header.type
        guard type.isKnown else {
            throw frameError(.unknownFrameType, "frame type \(type) is not defined by protocol version 1", header)
        }
        switch receiver {
        case .server where !type.isClientToServer:
            throw frameError(.unexpectedFrameType, "a server does not accept \(type) frames", header)
        case .client where type.isClientToServer:
            throw frameError(.unexpectedFrameType, "a client does not accept \(type) frames", header)
        default:
            break
        }
        return FrameView(header: header, payload: try decodePayload(payload, header))
    }

    private func decodePayload(_ p: UnsafeRawBufferPointer, _ header: FrameHeader) throws(ProtocolError) -> FramePayloadView {
        switch header.type {
        case .entryBatch:
            guard p.count >= Wire.batchPrefixSize else {
                throw frameError(.malformedPayload, "entry batch payload is \(p.count) bytes, at least 16 are needed", header)
            }
            let raffleID = p.le64(0)
            let count = Int(p.le32(8))
            let reserved = p.le32(12)
            guard reserved == 0 else {
                throw frameError(.nonzeroReserved, "entry batch reserved field is \(reserved), must be 0", header)
            }
            guard count > 0 else { throw frameError(.emptyBatch, "entry batch has no entries", header) }
            guard count <= limits.maxEntriesPerBatch else {
                throw frameError(
                    .tooManyEntries, "entry batch has \(count) entries; the limit is \(limits.maxEntriesPerBatch)", header)
            }
            let expected = Wire.batchPrefixSize + count * Wire.entrySize
            guard p.count == expected else {
                throw frameError(
                    .malformedPayload,
                    "entry batch declares \(count) entries (\(expected) payload bytes) but its payload is \(p.count) bytes",
                    header)
            }
            return .entryBatch(
                EntryBatchView(raffleID: raffleID, records: UnsafeRawBufferPointer(rebasing: p[Wire.batchPrefixSize...])))

        case .batchAck:
            guard p.count >= Wire.batchPrefixSize else {
                throw frameError(.malformedPayload, "batch ack payload is \(p.count) bytes, at least 16 are needed", header)
            }
            let count = Int(p.le32(8))
            let accepted = Int(p.le32(12))
            guard p.count == Wire.batchPrefixSize + count else {
                throw frameError(
                    .malformedPayload, "batch ack declares \(count) outcomes but carries \(p.count - Wire.batchPrefixSize)",
                    header)
            }
            let outcomes = UnsafeRawBufferPointer(rebasing: p[Wire.batchPrefixSize...])
            var actual = 0
            for byte in outcomes where byte == EntryOutcome.accepted.rawValue { actual += 1 }
            guard actual == accepted else {
                throw frameError(
                    .malformedPayload, "batch ack says \(accepted) accepted but its outcomes hold \(actual)", header)
            }
            return .batchAck(BatchAckView(raffleID: p.le64(0), acceptedCount: accepted, outcomeBytes: outcomes))

        case .throttled:
            guard p.count == Wire.throttledSize else {
                throw frameError(.malformedPayload, "throttled payload is \(p.count) bytes, must be 8", header)
            }
            guard p.le16(6) == 0 else {
                throw frameError(.nonzeroReserved, "throttled reserved field is not 0", header)
            }
            return .throttled(retryAfterMilliseconds: p.le32(0), reason: ThrottleReason(rawValue: p.le16(4)))

        case .error:
            guard p.count >= Wire.errorPrefixSize, p.count <= Wire.errorPrefixSize + Wire.maxErrorMessageBytes else {
                throw frameError(
                    .malformedPayload, "error payload is \(p.count) bytes, must be 4 to \(4 + Wire.maxErrorMessageBytes)",
                    header)
            }
            guard p.le16(2) == 0 else {
                throw frameError(.nonzeroReserved, "error reserved field is not 0", header)
            }
            return .error(
                ErrorView(
                    code: ProtocolErrorCode(rawValue: p.le16(0)),
                    messageBytes: UnsafeRawBufferPointer(rebasing: p[Wire.errorPrefixSize...])))

        case .ping, .pong:
            guard p.count == Wire.pingSize else {
                throw frameError(.malformedPayload, "\(header.type) payload is \(p.count) bytes, must be 8", header)
            }
            return header.type == .ping ? .ping(p.le64(0)) : .pong(p.le64(0))

        default:
            // Unreachable: unknown types were rejected above. Answer as the spec says rather than trap.
            throw frameError(.unknownFrameType, "frame type \(header.type) is not defined by protocol version 1", header)
        }
    }

    private func frameError(_ code: ProtocolErrorCode, _ message: String, _ header: FrameHeader) -> ProtocolError {
        ProtocolError(code: code, message: message, requestID: header.requestID, skippableLength: header.frameLength)
    }
}

private func hex(_ byte: UInt8) -> String {
    let s = String(byte, radix: 16, uppercase: true)
    return byte < 16 ? "0" + s : s
}

private func hex32(_ value: UInt32) -> String {
    let s = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: 8 - s.count) + s
}
