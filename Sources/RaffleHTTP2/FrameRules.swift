/// RFC 9113 rules on a client's frames that nghttp2 leaves unchecked with the options a server uses
/// here: closed streams are not retained (so frames on them are skipped silently) and RFC 7540
/// priorities are off (so PRIORITY frames are skipped unread). A pure scanner over the bytes a
/// server receives, run before they reach nghttp2: it reads frame headers, and the payload of
/// PRIORITY frames, and names the first frame that breaks one of these rules:
///
/// - §5.1: DATA or HEADERS on a stream the client already ended (END_STREAM) or reset
///   (RST_STREAM) → STREAM_CLOSED;
/// - §5.1.1: HEADERS on a stream id the client skipped (a smaller id than one it already used,
///   never opened) → PROTOCOL_ERROR;
/// - §5.3.1: a PRIORITY frame making a stream depend on itself → PROTOCOL_ERROR;
/// - §6.3: PRIORITY on stream 0 → PROTOCOL_ERROR; a PRIORITY frame whose length is not 5 →
///   FRAME_SIZE_ERROR.
///
/// Each is answered as a connection error (RFC 9113 §5.4.1 allows a stream error to be treated as
/// one): no well-behaved client sends any of them. Memory is fixed: the state of the client's 128
/// most recent stream ids as two bit sets. Frames on older ids pass to nghttp2 as before.
struct FrameRules {
    /// The first frame that broke a rule.
    struct Violation: Equatable, Sendable {
        /// Bytes of the scanned input before the offending frame (0 when it began in an earlier input).
        var offset: Int
        /// The HTTP/2 error code for GOAWAY.
        var errorCode: UInt32
        var reason: String
    }

    static let protocolError: UInt32 = 0x1
    static let streamClosed: UInt32 = 0x5
    static let frameSizeError: UInt32 = 0x6

    /// Client preface bytes still to skip.
    private var prefaceLeft: Int
    /// The frame header being read (9 bytes) and how much of it has arrived.
    private var head: (UInt64, UInt8) = (0, 0)
    private var headFill = 0
    /// The current frame: payload bytes still to come.
    private var payloadLeft = 0
    private var type: UInt8 = 0
    private var flags: UInt8 = 0
    private var stream: UInt32 = 0
    /// A PRIORITY frame's dependency (its first four payload bytes) as they arrive.
    private var dependency: UInt32 = 0
    private var dependencyFill = 0
    /// The highest client stream id opened (-1: none yet).
    private var newest = -1
    /// Of the 128 most recent client stream ids (`newest`, `newest - 2`, …): opened by HEADERS,
    /// and ended by the client (END_STREAM or RST_STREAM).
    private var opened = StreamBits()
    private var ended = StreamBits()

    /// A server's scanner (it first skips the 24-byte client preface).
    init(skippingPreface: Bool = true) {
        prefaceLeft = skippingPreface ? 24 : 0
    }

    /// Scans the next received bytes; returns the first violation, after which the connection
    /// ends (scan no further input).
    mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Violation? {
        var i = 0
        // Where the current frame began in this input (0: in an earlier one).
        var frameStart = 0
        let n = bytes.count
        while i < n {
            if prefaceLeft > 0 {
                let k = min(prefaceLeft, n - i)
                prefaceLeft -= k
                i += k
                frameStart = i
                continue
            }
            if payloadLeft > 0 {
                let k = min(payloadLeft, n - i)
                if type == 2 {
                    var j = 0
                    while j < k && dependencyFill < 4 {
                        dependency = dependency << 8 | UInt32(bytes[i + j])
                        dependencyFill += 1
                        j += 1
                    }
                }
                payloadLeft -= k
                i += k
                if payloadLeft == 0 {
                    if type == 2, let v = priorityDone(at: frameStart) { return v }
                    frameStart = i
                }
                continue
            }
            let length: Int
            if headFill == 0 && n - i >= 9 {
                // The usual case: the whole header is here.
                frameStart = i
                length = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
                type = bytes[i + 3]
                flags = bytes[i + 4]
                stream = (UInt32(bytes[i + 5]) << 24 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 8 | UInt32(bytes[i + 8])) & 0x7FFF_FFFF
                i += 9
            } else {
                // A header cut across reads: gathered a byte at a time.
                if headFill == 0 { frameStart = i }
                while headFill < 9 && i < n {
                    if headFill < 8 {
                        head.0 = head.0 << 8 | UInt64(bytes[i])
                    } else {
                        head.1 = bytes[i]
                    }
                    headFill += 1
                    i += 1
                }
                guard headFill == 9 else { break }
                headFill = 0
                // Bytes 0-2 length, 3 type, 4 flags, 5-8 stream (high bit reserved).
                length = Int(head.0 >> 40)
                type = UInt8(truncatingIfNeeded: head.0 >> 32)
                flags = UInt8(truncatingIfNeeded: head.0 >> 24)
                stream = (UInt32(truncatingIfNeeded: head.0) << 8 | UInt32(head.1)) & 0x7FFF_FFFF
                head = (0, 0)
            }
            payloadLeft = length
            if let v = frameBegins(length: length, at: frameStart) { return v }
            if length == 0 {
                if type == 2, let v = priorityDone(at: frameStart) { return v }
                frameStart = i
            }
        }
        return nil
    }

    /// Checks a frame from its header, and records what it does to its stream.
    private mutating func frameBegins(length: Int, at offset: Int) -> Violation? {
        switch type {
        case 0, 1:  // DATA, HEADERS
            guard stream & 1 == 1 else { return nil }  // stream 0 and even ids: nghttp2's own checks
            let id = Int(stream)
            if id > newest {
                guard type == 1 else { return nil }  // DATA on an idle stream: nghttp2's PROTOCOL_ERROR
                let step = (id - newest) / 2
                opened.shift(by: step)
                ended.shift(by: step)
                newest = id
                opened.insert(0)
            } else {
                let k = (newest - id) / 2
                guard k < StreamBits.count else { return nil }
                if ended.contains(k) {
                    let what = type == 0 ? "DATA" : "HEADERS"
                    return Violation(offset: offset, errorCode: Self.streamClosed, reason: "\(what) on stream \(id), which the client had already ended or reset")
                }
                if type == 1 && !opened.contains(k) {
                    return Violation(
                        offset: offset, errorCode: Self.protocolError,
                        reason: "HEADERS opening stream \(id) after stream \(newest): new stream ids must increase")
                }
            }
            if flags & 0x1 != 0 { ended.insert((newest - id) / 2) }
        case 2:  // PRIORITY
            dependency = 0
            dependencyFill = 0
            if stream == 0 { return Violation(offset: offset, errorCode: Self.protocolError, reason: "PRIORITY frame on stream 0") }
            if length != 5 {
                return Violation(offset: offset, errorCode: Self.frameSizeError, reason: "PRIORITY frame of \(length) bytes (it is 5)")
            }
        case 3:  // RST_STREAM
            let id = Int(stream)
            if stream & 1 == 1 && id <= newest && (newest - id) / 2 < StreamBits.count { ended.insert((newest - id) / 2) }
        default:
            break
        }
        return nil
    }

    private func priorityDone(at offset: Int) -> Violation? {
        guard dependencyFill == 4, dependency & 0x7FFF_FFFF == stream else { return nil }
        return Violation(offset: offset, errorCode: Self.protocolError, reason: "PRIORITY frame making stream \(stream) depend on itself")
    }
}

/// A bit per client stream id, for the 128 most recent (bit k: the id `2k` below the newest).
struct StreamBits: Equatable {
    static let count = 128
    private var low: UInt64 = 0
    private var high: UInt64 = 0

    func contains(_ k: Int) -> Bool {
        k < 64 ? (low >> UInt64(k)) & 1 == 1 : k < 128 ? (high >> UInt64(k - 64)) & 1 == 1 : false
    }

    mutating func insert(_ k: Int) {
        if k < 64 { low |= 1 << UInt64(k) } else if k < 128 { high |= 1 << UInt64(k - 64) }
    }

    /// A newer id arrived `d` ids (of the client's) above the newest: every bit moves up by `d`.
    mutating func shift(by d: Int) {
        if d >= 128 {
            low = 0
            high = 0
        } else if d >= 64 {
            high = d == 64 ? low : low << UInt64(d - 64)
            low = 0
        } else if d > 0 {
            high = high << UInt64(d) | low >> UInt64(64 - d)
            low <<= UInt64(d)
        }
    }
}
