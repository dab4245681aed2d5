import NIOCore
import RaffleAdmission
import RaffleLedger
import RaffleWire
import RaffleWireNIO

// The entry path shared by every transport (HTTP/2 streams, raw TCP connections, UDP datagrams):
// frames are decoded in place, admitted, handed to the ledger and answered into a `ReplyQueue`
// whose acks are released only once the log has made them durable. The transports differ only in
// how bytes arrive and how released replies leave.

/// How one frame was answered (the reply is already queued).
struct EntryReply {
    /// The HTTP status this reply maps to (PROTOCOL.md §7, §11).
    var status: Int
    /// For `throttled`: the retry-after, and the policy that refused.
    var retryAfterMilliseconds: UInt32?
    var throttlePolicy: (name: String, limit: RateLimit, remaining: UInt64)?
}

/// What `processFrames` did with a run of bytes.
struct ProcessResult {
    /// Bytes consumed (whole frames, and skipped bad ones).
    var used = 0
    /// A connection-level error ended the input: the rest must be dropped.
    var fatal = false
    /// Frames answered.
    var frames = 0
    /// The first reply of this run, for transports whose status follows it.
    var first: EntryReply?
}

/// What `assemble` could not do.
enum AssembleProblem {
    /// No ingest buffer is free: answer the frame (`requestID`) `throttled(server_busy)`; the rest
    /// of the input cannot be framed without the dropped piece.
    case noBuffer(requestID: UInt64)
    /// A frame longer than an ingest buffer (cannot happen with the buffer sized to the frame limit,
    /// but a peer must never make us write past it).
    case overflow
}

/// Who is asking, for admission.
/// The transport a request came over (the `transport` label of `raffled_entries_acknowledged_total`).
enum EntryTransport: Int, CaseIterable, Sendable {
    case http2, http1, tcp, udp

    var label: String {
        switch self {
        case .http2: "http2"
        case .http1: "http1"
        case .tcp: "tcp"
        case .udp: "udp"
        }
    }
}

struct Requester {
    /// The API-key client (nil: anonymous).
    var client: Int?
    /// Monotonic and wall-clock time of this read.
    var nowNanos: UInt64
    var wallMilliseconds: Int64
    /// A bucket shared between loops (UDP: the source address's); nil: the connection's own.
    var source: AtomicGCRA? = nil
    /// Given by every adapter (no default: a new transport must say which it is).
    var transport: EntryTransport
}

extension LoopContext {
    /// Feeds transport bytes to `process`: whole frames straight from `bytes` when nothing is
    /// buffered (no copy), a trailing partial frame into an ingest buffer, completed there by later
    /// bytes. `process` returns the bytes it used and whether the input ended fatally.
    func assemble(
        _ bytes: UnsafeRawBufferPointer, partial: inout PartialFrame, process: (UnsafeRawBufferPointer) -> (used: Int, fatal: Bool)
    ) -> AssembleProblem? {
        var rest = bytes
        if partial.fill == 0 {
            let (used, fatal) = process(rest)
            if fatal { return nil }
            rest = UnsafeRawBufferPointer(rebasing: rest[used...])
        }
        guard !rest.isEmpty else { return nil }
        if partial.slot < 0 {
            guard let slot = takeSlot() else {
                let id = partial.fill == 0 && rest.count >= Wire.headerSize ? rest.loadUnaligned(fromByteOffset: 12, as: UInt64.self).littleEndian : 0
                return .noBuffer(requestID: id)
            }
            partial.slot = slot
        }
        let memory = self.memory(of: partial.slot)
        let fill = partial.fill
        guard fill + rest.count <= memory.count else {
            partial.drop(self)
            return .overflow
        }
        UnsafeMutableRawBufferPointer(rebasing: memory[fill..<(fill + rest.count)]).copyMemory(from: rest)
        partial.fill = fill + rest.count
        let (used, fatal) = process(UnsafeRawBufferPointer(rebasing: memory[0..<partial.fill]))
        let left = partial.fill - used
        if left > 0 && used > 0, let base = memory.baseAddress {
            base.copyMemory(from: base + used, byteCount: left)
        }
        partial.fill = left
        if left == 0 || fatal { partial.drop(self) }
        return nil
    }

    /// Decodes and answers the whole frames at the start of `bytes` into `replies`.
    func processFrames(
        _ bytes: UnsafeRawBufferPointer, decoder: FrameDecoder, requester: Requester, anonymous: inout LocalGCRA, replies: inout ReplyQueue
    ) -> ProcessResult {
        var result = ProcessResult()
        while result.used < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[result.used...])
            let reply: EntryReply
            do {
                guard let frame = try decoder.decode(rest) else { break }
                reply = answer(frame, requester: requester, anonymous: &anonymous, replies: &replies)
                result.used += frame.frameLength
            } catch {
                metrics.frameErrors.increment()
                reply = answer(error, replies: &replies)
                if let skip = error.skippableLength {
                    result.used += skip
                } else {
                    result.fatal = true
                    result.used = bytes.count
                }
            }
            result.frames += 1
            if result.first == nil { result.first = reply }
            if result.fatal { break }
        }
        return result
    }

    /// Answers one decoded frame: admission, then the ledger; the reply goes into `replies`.
    func answer(_ frame: FrameView, requester: Requester, anonymous: inout LocalGCRA, replies: inout ReplyQueue, maxReplyBytes: Int = .max) -> EntryReply {
        let requestID = frame.header.requestID
        // A request that carried a checksum gets replies that carry one (PROTOCOL.md §9, §13).
        let checksum = frame.header.flags.intersection(.checksum)
        switch frame.payload {
        case .entryBatch(let batch):
            let n = batch.count
            let decision =
                if let source = requester.source {
                    admission.admit(source: source, entries: n, now: requester.nowNanos)
                } else {
                    admission.admit(client: requester.client, anonymous: &anonymous, entries: n, now: requester.nowNanos)
                }
            switch decision {
            case .admit:
                break
            case .throttle(let ms, let reason, let limit, let policy, let remaining):
                metrics.throttled(reason)
                replies.out.writeRaffleFrame(
                    Frame(requestID: requestID, flags: checksum, body: .throttled(retryAfterMilliseconds: ms, reason: reason)))
                replies.mark(lsn: 0, requestID: requestID, flags: checksum)
                return EntryReply(status: 429, retryAfterMilliseconds: ms, throttlePolicy: (policy, limit, remaining))
            case .tooLarge(let cost, let limit, let policy):
                return answer(ProtocolError(
                    code: .batchExceedsBurst,
                    message: "this batch costs \(cost) (\(n) entries + \(configuration.admission.requestCost) per request) but the \(policy) limit's burst is \(limit.burst): split it into smaller batches",
                    requestID: requestID), replies: &replies, maxReplyBytes: maxReplyBytes, flags: checksum)
            }
            switch ledger.admit(batch, now: requester.wallMilliseconds, outcomes: outcomes) {
            case .processed(let accepted, let commit):
                let outcomes = UnsafeBufferPointer(rebasing: self.outcomes[0..<n])
                var duplicates = 0
                for outcome in outcomes where outcome == .alreadyEntered { duplicates &+= 1 }
                metrics.recordOutcomes(accepted: accepted, duplicates: duplicates, rejected: n - accepted - duplicates, bytes: frame.frameLength)
                metrics.acknowledged[requester.transport.rawValue].increment(by: Int64(n))
                replies.out.writeBatchAck(requestID: requestID, raffleID: batch.raffleID, outcomes: outcomes, flags: checksum)
                replies.mark(lsn: commit.lsn, requestID: requestID, flags: checksum)
                return EntryReply(status: 200)
            case .deferred(let ticket):
                // Outcomes come at commit: reserve the ack in order; `advance` completes it.
                replies.reserveAck(
                    ticket: ticket, requestID: requestID, raffleID: batch.raffleID, count: n, flags: checksum, scratch: outcomes)
                metrics.recordOutcomes(accepted: 0, duplicates: 0, rejected: 0, bytes: frame.frameLength)
                metrics.acknowledged[requester.transport.rawValue].increment(by: Int64(n))
                return EntryReply(status: 200)
            case .unknownRaffle:
                return answer(
                    ProtocolError(code: .unknownRaffle, message: "raffle \(batch.raffleID) does not exist", requestID: requestID), replies: &replies,
                    maxReplyBytes: maxReplyBytes, flags: checksum)
            case .unavailable(let message):
                return answer(
                    ProtocolError(code: .unavailable, message: message, requestID: requestID), replies: &replies, maxReplyBytes: maxReplyBytes,
                    flags: checksum)
            }
        case .ping(let value):
            replies.out.writeRaffleFrame(Frame(requestID: requestID, flags: checksum, body: .pong(value)))
            replies.mark(lsn: 0, requestID: requestID, flags: checksum)
            return EntryReply(status: 200)
        default:
            // The decoder (receiver: .server) refuses every other type.
            return answer(
                ProtocolError(code: .unexpectedFrameType, message: "unexpected frame", requestID: requestID), replies: &replies,
                maxReplyBytes: maxReplyBytes, flags: checksum)
        }
    }

    /// Answers `throttled(server_busy)` with the configured retry-after: the ingest buffers ran out
    /// (HTTP/2, raw TCP) or too many acks wait for the log (UDP). The caller counts which.
    func answerBusy(requestID: UInt64, replies: inout ReplyQueue, flags: FrameFlags = []) -> EntryReply {
        let ms = configuration.busyRetryAfterMilliseconds
        replies.out.writeRaffleFrame(Frame(requestID: requestID, flags: flags, body: .throttled(retryAfterMilliseconds: ms, reason: .serverBusy)))
        replies.mark(lsn: 0, requestID: requestID, flags: flags)
        return EntryReply(status: 429, retryAfterMilliseconds: ms)
    }

    /// Answers with an error frame, its message cut (at a character boundary) so the frame fits in
    /// `maxReplyBytes` (UDP: never larger than the request).
    func answer(_ error: ProtocolError, replies: inout ReplyQueue, maxReplyBytes: Int = .max, flags: FrameFlags = []) -> EntryReply {
        var message = error.message
        let room = maxReplyBytes - Wire.headerSize - Wire.errorPrefixSize
        if message.utf8.count > room {
            var utf8 = Array(message.utf8.prefix(max(room, 0)))
            while let last = utf8.last, last & 0xC0 == 0x80 { utf8.removeLast() }  // a continuation byte: back off
            if let last = utf8.last, last >= 0xC0 { utf8.removeLast() }  // a lead byte whose rest was cut
            message = String(decoding: utf8, as: UTF8.self)
        }
        replies.out.writeRaffleFrame(Frame(requestID: error.requestID, flags: flags, body: .error(code: error.code, message: message)))
        replies.mark(lsn: 0, requestID: error.requestID, flags: flags)
        return EntryReply(status: error.code.httpStatus)
    }
}
