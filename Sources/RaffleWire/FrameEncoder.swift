/// Encodes frames into caller-provided memory. Every function writes exactly the bytes it reports
/// and never more than the buffer holds; none allocates except `encode(_:) -> [UInt8]`.
public enum FrameEncoder {
    /// The encoded size of `frame`, header included. An error message is counted as cut to 1,024 bytes.
    public static func encodedLength(of frame: Frame) -> Int {
        Wire.headerSize + payloadLength(of: frame.body)
    }

    /// Encodes `frame` as a new byte array.
    /// - Throws: `FRAME_TOO_LARGE` if the payload would exceed `Wire.absoluteMaxPayloadBytes`.
    public static func encode(_ frame: Frame) throws(ProtocolError) -> [UInt8] {
        let length = try checkedLength(of: frame)
        return [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
            initialized = encode(frame, into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Encodes `frame` into the start of `buffer` and returns the bytes written, or 0 (writing
    /// nothing) when `buffer` is shorter than `encodedLength(of:)` or the frame exceeds the protocol's
    /// absolute payload limit.
    @discardableResult
    public static func encode(_ frame: Frame, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let length = try? checkedLength(of: frame), buffer.count >= length else { return 0 }
        let payloadLength = length - Wire.headerSize
        writeHeader(type: frame.type, flags: frame.flags, payloadLength: payloadLength, requestID: frame.requestID, into: buffer)
        let p = UnsafeMutableRawBufferPointer(rebasing: buffer[Wire.headerSize..<length])
        switch frame.body {
        case .entryBatch(let raffleID, let entries):
            p.putLE64(raffleID, at: 0)
            p.putLE32(UInt32(entries.count), at: 8)
            p.putLE32(0, at: 12)
            var o = Wire.batchPrefixSize
            for entry in entries {
                p.putLE64(entry.userID, at: o)
                p.putLE32(entry.tickets, at: o + 8)
                p.putLE32(entry.reserved, at: o + 12)
                o += Wire.entrySize
            }
        case .batchAck(let raffleID, let outcomes):
            outcomes.withUnsafeBufferPointer { outcomes in
                writeBatchAckPayload(raffleID: raffleID, outcomes: outcomes, into: p)
            }
        case .throttled(let ms, let reason):
            p.putLE32(ms, at: 0)
            p.putLE16(reason.rawValue, at: 4)
            p.putLE16(0, at: 6)
        case .error(let code, let message):
            p.putLE16(code.rawValue, at: 0)
            p.putLE16(0, at: 2)
            let bytes = truncatedUTF8(message)
            for (i, byte) in bytes.enumerated() { p[Wire.errorPrefixSize + i] = byte }
        case .ping(let value), .pong(let value):
            p.putLE64(value, at: 0)
        }
        sealChecksum(buffer, length: length)
        return length
    }

    /// Encodes a batch ack straight from an outcome buffer — the server's ack path, with no `Frame`
    /// and no allocation. Returns the bytes written (`24 + 16 + outcomes.count`), or 0 if `buffer` is
    /// too short.
    @discardableResult
    public static func encodeBatchAck(
        requestID: UInt64, raffleID: UInt64, outcomes: UnsafeBufferPointer<EntryOutcome>, flags: FrameFlags = [],
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        let length = Wire.headerSize + Wire.batchPrefixSize + outcomes.count
        guard buffer.count >= length else { return 0 }
        writeHeader(type: .batchAck, flags: flags, payloadLength: length - Wire.headerSize, requestID: requestID, into: buffer)
        writeBatchAckPayload(
            raffleID: raffleID, outcomes: outcomes,
            into: UnsafeMutableRawBufferPointer(rebasing: buffer[Wire.headerSize..<length]))
        sealChecksum(buffer, length: length)
        return length
    }

    // MARK: - Pieces

    static func payloadLength(of body: Frame.Body) -> Int {
        switch body {
        case .entryBatch(_, let entries): Wire.batchPrefixSize + entries.count * Wire.entrySize
        case .batchAck(_, let outcomes): Wire.batchPrefixSize + outcomes.count
        case .throttled: Wire.throttledSize
        case .error(_, let message): Wire.errorPrefixSize + truncatedUTF8(message).count
        case .ping, .pong: Wire.pingSize
        }
    }

    private static func checkedLength(of frame: Frame) throws(ProtocolError) -> Int {
        let payload = payloadLength(of: frame.body)
        guard payload <= Wire.absoluteMaxPayloadBytes else {
            throw ProtocolError(
                code: .frameTooLarge,
                message: "payload of \(payload) bytes exceeds the protocol's \(Wire.absoluteMaxPayloadBytes)",
                requestID: frame.requestID)
        }
        return Wire.headerSize + payload
    }

    private static func writeHeader(
        type: FrameType, flags: FrameFlags, payloadLength: Int, requestID: UInt64, into b: UnsafeMutableRawBufferPointer
    ) {
        b[0] = Wire.magic.0
        b[1] = Wire.magic.1
        b[2] = Wire.version
        b[3] = type.rawValue
        b.putLE16(flags.rawValue, at: 4)
        b.putLE16(0, at: 6)
        b.putLE32(UInt32(truncatingIfNeeded: payloadLength), at: 8)
        b.putLE64(requestID, at: 12)
        b.putLE32(0, at: 20)
    }

    private static func writeBatchAckPayload(
        raffleID: UInt64, outcomes: UnsafeBufferPointer<EntryOutcome>, into p: UnsafeMutableRawBufferPointer
    ) {
        p.putLE64(raffleID, at: 0)
        p.putLE32(UInt32(truncatingIfNeeded: outcomes.count), at: 8)
        var accepted: UInt32 = 0
        var o = Wire.batchPrefixSize
        for outcome in outcomes {
            p[o] = outcome.rawValue
            if outcome == .accepted { accepted &+= 1 }
            o &+= 1
        }
        p.putLE32(accepted, at: 12)
    }

    /// Fills in the checksum field when the frame's checksum flag is set.
    private static func sealChecksum(_ b: UnsafeMutableRawBufferPointer, length: Int) {
        let frame = UnsafeRawBufferPointer(rebasing: b[0..<length])
        guard FrameFlags(rawValue: frame.le16(4)).contains(.checksum) else { return }
        let crc = CRC32C.frameChecksum(header: frame, payload: UnsafeRawBufferPointer(rebasing: frame[Wire.headerSize...]))
        b.putLE32(crc, at: 20)
    }

    /// The message's UTF-8 bytes, cut at a scalar boundary to at most 1,024 bytes.
    static func truncatedUTF8(_ message: String) -> Substring.UTF8View {
        let utf8 = message.utf8
        guard utf8.count > Wire.maxErrorMessageBytes else { return message[...].utf8 }
        var end = utf8.index(utf8.startIndex, offsetBy: Wire.maxErrorMessageBytes)
        // Step back over continuation bytes (10xxxxxx) so no scalar is split.
        while end > utf8.startIndex, utf8[end] & 0xC0 == 0x80 { end = utf8.index(before: end) }
        return message[..<end].utf8
    }
}
