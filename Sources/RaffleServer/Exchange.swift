import Foundation
import RaffleAdmission
import RaffleLedger
import RaffleWire

// One request and its response, as HTTP/2 streams and HTTP/1.1 exchanges both run them: the body's
// frames go through the shared entry path (`LoopContext.assemble` / `processFrames`) into the
// stream's reply queue, the status follows the first reply, and replies are released as the log
// makes them durable. The two HTTP adapters only move bytes and headers.

/// Whether a `content-type` value names `application/vnd.raffled.frames`: parameters are ignored and
/// media types are case-insensitive (RFC 9110 §8.3.1).
func isFramesContentType(_ value: String?) -> Bool {
    guard let value else { return false }
    if value == Wire.contentType { return true }  // the usual spelling: no parsing
    let type = value.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    return type.trimmingCharacters(in: .whitespaces).lowercased() == Wire.contentType
}

/// Who is asking and when, for one read's worth of frames.
struct IngestContext {
    var client: Int?
    var nowNanos: UInt64
    var wallMilliseconds: Int64
    var transport: EntryTransport
}

extension StreamState {
    /// Decodes and admits the whole frames of `bytes` (body bytes), keeping a trailing partial frame
    /// in an ingest buffer. `anonymous` is the connection's bucket for requests without a known key.
    mutating func ingest(_ bytes: UnsafeRawBufferPointer, loop: LoopContext, at now: IngestContext, anonymous: inout LocalGCRA) {
        guard !fatal else { return }
        // `assemble` holds the partial frame inout while the closure writes replies: work on a copy
        // so the two accesses to `self` never overlap.
        var partial = self.partial
        let requester = Requester(client: now.client, nowNanos: now.nowNanos, wallMilliseconds: now.wallMilliseconds, transport: now.transport)
        let problem = loop.assemble(bytes, partial: &partial) { chunk in
            let first = replies.isPristine && !headersSubmitted
            let result = loop.processFrames(chunk, decoder: loop.decoder, requester: requester, anonymous: &anonymous, replies: &replies)
            framesSeen += result.frames
            if first, let reply = result.first { noteFirstReply(reply) }
            if result.fatal {
                // `assemble` gives the ingest buffer back; the stream takes no more frames.
                fatal = true
                finished = true
            }
            return (result.used, result.fatal)
        }
        self.partial = partial
        switch problem {
        case nil:
            break
        case .noBuffer(let requestID):
            loop.metrics.throttledPoolExhausted.increment()
            let first = replies.isPristine && !headersSubmitted
            let reply = loop.answerBusy(requestID: requestID, replies: &replies)
            if first { noteFirstReply(reply) }
            // The rest of this request's bytes cannot be framed without the dropped piece.
            endFatally(loop)
        case .overflow:
            addError(ProtocolError(code: .frameTooLarge, message: "frame exceeds the ingest buffer"), loop: loop)
            endFatally(loop)
        }
    }

    /// The status follows the first reply (PROTOCOL.md §11).
    mutating func noteFirstReply(_ reply: EntryReply) {
        status = reply.status
        retryAfterMilliseconds = reply.retryAfterMilliseconds
        throttlePolicy = reply.throttlePolicy
    }

    /// Queues an error frame as the next reply.
    mutating func addError(_ error: ProtocolError, loop: LoopContext) {
        let first = replies.isPristine && !headersSubmitted
        let reply = loop.answer(error, replies: &replies)
        if first { noteFirstReply(reply) }
    }

    /// A connection-level frame error or a lost piece: no more frames are taken from this body.
    mutating func endFatally(_ loop: LoopContext) {
        fatal = true
        finished = true
        partial.drop(loop)
    }

    /// The request body of an entries request (or a raw-TCP connection's input: `source`) ended: a
    /// frame cut short is answered TRUNCATED_FRAME, and so is no frame at all when `emptyIsError`.
    mutating func entriesBodyEnded(_ loop: LoopContext, source: String = "request body", emptyIsError: Bool = true) {
        if !finished {
            if partial.fill > 0 {
                addError(
                    ProtocolError(
                        code: .truncatedFrame, message: "\(source) ended inside a frame (\(partial.fill) bytes of it)",
                        requestID: partial.requestID(loop)), loop: loop)
            } else if framesSeen == 0 && emptyIsError {
                addError(ProtocolError(code: .truncatedFrame, message: "request body is empty: send one or more frames"), loop: loop)
            }
        }
        partial.drop(loop)
    }

    /// Queues a JSON (or text) response; it is released once `response.commit` is durable.
    mutating func answer(_ response: AdminResponse) {
        status = response.status
        bodyKind = response.kind
        replies.out.writeBytes(response.body)
        replies.mark(lsn: response.commit?.lsn ?? 0, requestID: 0)
    }

    /// Releases the replies that are durable now; true if any was. Records the ack latency of
    /// frame replies (`now` is read only then).
    mutating func advance(_ loop: LoopContext, now: () -> UInt64) -> Bool {
        if let failure = loop.failure, hasUnreleased, !headersSubmitted, bodyKind != .frames,
            !loop.isDurable(CommitPoint(lsn: replies.marks[replies.markHead].lsn))
        {
            // An admin answer waiting for a commit that will never come (e.g. a raffle's creation):
            // a JSON error in its place, not a frame.
            replies.reset()
            answer(AdminResponse(status: 503, json: AdminAPI.errorJSON("not stored: \(failure)")))
        }
        let waitsForLedger =
            hasUnreleased
            && (replies.marks[replies.markHead].ticket != 0 || !loop.isDurable(CommitPoint(lsn: replies.marks[replies.markHead].lsn)))
        if loop.failure != nil && waitsForLedger && replies.markHead == 0 && !headersSubmitted {
            status = 503  // the first reply will be the UNAVAILABLE error
        }
        let progressed = replies.advance(loop)
        if replies.firstReplyFailed && !headersSubmitted { status = 503 }
        if progressed && bodyKind == .frames && startNanos > 0 {
            let t = now()
            loop.metrics.ackLatency.recordNanoseconds(Int64(t &- startNanos))
            startNanos = t
        }
        return progressed
    }
}
