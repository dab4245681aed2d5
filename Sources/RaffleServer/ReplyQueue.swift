import NIOCore
import RaffleLedger
import RaffleWire
import RaffleWireNIO

// The reply side of the entry path: replies queue in request order and leave as the ledger makes
// them durable (or decides them, for a ledger that decides at commit). Every transport releases
// its replies through this one type.

/// One reply's place in an output queue: sent only when the log has committed `lsn`.
struct ReplyMark {
    /// Cumulative: the largest commit point of this reply and every reply before it in the queue.
    var lsn: UInt64
    /// Output position where this reply ends.
    var end: Int
    /// The request id it answers (to answer with an error instead if the log fails).
    var requestID: UInt64
    /// Non-zero: a batch ack reserved for a deferred batch (`Admission.deferred`), whose outcomes the
    /// ledger fills at commit (see `ReplyQueue.deferred`).
    var ticket: UInt64 = 0
    /// The request's frame flags that its reply repeats (the checksum), kept for an error that
    /// replaces the reply.
    var flags: FrameFlags = []
}

/// An ack reserved in a reply queue for a batch whose outcomes the ledger decides at commit: its
/// bytes are written at admission with the right length and patched (or replaced by an error) once
/// the ledger resolves the ticket.
struct DeferredAck {
    var ticket: UInt64
    /// Where the reserved frame starts in the queue's buffer.
    var frameStart: Int
    var raffleID: UInt64
    var count: Int
    var flags: FrameFlags
}

/// Replies in request order. Bytes before `released` may be sent; the rest wait for durability.
struct ReplyQueue {
    var out = ByteBuffer()
    var released = 0
    var marks: [ReplyMark] = []
    var markHead = 0
    var cumulativeLSN: UInt64 = 0
    /// Reserved acks waiting for their ledger's decision (empty with a ledger that decides at admission).
    var deferred: [DeferredAck] = []
    /// The first reply was a reserved ack whose batch did not commit: it became UNAVAILABLE (the
    /// HTTP status follows the first reply).
    var firstReplyFailed = false

    /// Some reply is not yet durable.
    var hasUnreleased: Bool { markHead < marks.count }

    /// Nothing was ever queued (since the last reset).
    var isPristine: Bool { marks.isEmpty && out.writerIndex == 0 }

    /// Released bytes not yet taken by the transport.
    var sendable: Int { released - out.readerIndex }

    /// Ends the reply just written to `out`: it may leave once `lsn` is durable (0: at once).
    mutating func mark(lsn: UInt64, requestID: UInt64, flags: FrameFlags = []) {
        cumulativeLSN = max(cumulativeLSN, lsn)
        marks.append(ReplyMark(lsn: cumulativeLSN, end: out.writerIndex, requestID: requestID, flags: flags))
    }

    /// Reserves an ack for a deferred batch: the frame is written now (so later replies keep their
    /// place) and completed by `advance` once the ledger resolves `ticket`.
    mutating func reserveAck(ticket: UInt64, requestID: UInt64, raffleID: UInt64, count: Int, flags: FrameFlags, scratch: UnsafeMutableBufferPointer<EntryOutcome>) {
        let start = out.writerIndex
        out.writeBatchAck(requestID: requestID, raffleID: raffleID, outcomes: UnsafeBufferPointer(rebasing: scratch[0..<count]), flags: flags)
        deferred.append(DeferredAck(ticket: ticket, frameStart: start, raffleID: raffleID, count: count, flags: flags))
        marks.append(ReplyMark(lsn: cumulativeLSN, end: out.writerIndex, requestID: requestID, ticket: ticket, flags: flags))
    }

    /// Moves `released` past every reply that is durable now; true if it moved.
    mutating func advance(_ loop: LoopContext) -> Bool {
        let progressed = release(loop)
        // The ledger failed: what is still waiting will never be durable; each becomes UNAVAILABLE.
        guard let failure = loop.failure, hasUnreleased else { return progressed }
        failUnreleased(failure)
        return release(loop) || progressed
    }

    /// Moves `released` past every reply that needs nothing more (durable, decided, or never waited).
    private mutating func release(_ loop: LoopContext) -> Bool {
        var r = released
        while markHead < marks.count {
            if marks[markHead].ticket != 0 {
                // A reserved ack: it waits for the ledger's decision (and holds back what follows it).
                guard complete(markHead, loop) else { break }
            }
            let m = marks[markHead]
            guard m.lsn == 0 || loop.isDurable(CommitPoint(lsn: m.lsn)) else { break }
            r = m.end
            markHead += 1
        }
        defer { released = r }
        return r > released
    }

    /// Completes the reserved ack of mark `i` if its ledger has decided: the outcomes patched in
    /// place (same length), or the whole frame replaced by UNAVAILABLE when the batch did not commit.
    private mutating func complete(_ i: Int, _ loop: LoopContext) -> Bool {
        let ticket = marks[i].ticket
        guard let d = deferred.firstIndex(where: { $0.ticket == ticket }) else {
            marks[i].ticket = 0
            return true
        }
        let ack = deferred[d]
        guard let resolution = loop.ledger.resolve(ticket: ticket, into: loop.outcomes) else { return false }
        deferred.remove(at: d)
        marks[i].ticket = 0
        var frame = ByteBuffer()
        switch resolution {
        case .decided:
            frame.writeBatchAck(
                requestID: marks[i].requestID, raffleID: ack.raffleID, outcomes: UnsafeBufferPointer(rebasing: loop.outcomes[0..<ack.count]),
                flags: ack.flags)
            loop.recordDeferredOutcomes(count: ack.count)
        case .failed(let message):
            if i == 0 { firstReplyFailed = true }
            frame.writeRaffleFrame(
                Frame(requestID: marks[i].requestID, flags: ack.flags, body: .error(code: .unavailable, message: "the batch was not stored: \(message)")))
        case .unknownRaffle:
            frame.writeRaffleFrame(
                Frame(requestID: marks[i].requestID, flags: ack.flags, body: .error(code: .unknownRaffle, message: "raffle \(ack.raffleID) does not exist")))
        }
        replace(from: ack.frameStart, to: marks[i].end, with: frame, mark: i)
        return true
    }

    /// Puts `bytes` where `start..<end` was (the reply of mark `i`), moving what follows it.
    private mutating func replace(from start: Int, to end: Int, with bytes: ByteBuffer, mark i: Int) {
        let delta = bytes.readableBytes - (end - start)
        if delta == 0 {
            out.setBuffer(bytes, at: start)
            return
        }
        var rebuilt = ByteBuffer()
        rebuilt.reserveCapacity(out.writerIndex + delta)
        rebuilt.writeBytes(out.getSlice(at: 0, length: start)?.readableBytesView ?? ByteBufferView())
        rebuilt.writeImmutableBuffer(bytes)
        rebuilt.writeBytes(out.getSlice(at: end, length: out.writerIndex - end)?.readableBytesView ?? ByteBufferView())
        rebuilt.moveReaderIndex(to: out.readerIndex)
        out = rebuilt
        for k in i..<marks.count { marks[k].end += delta }
        for k in deferred.indices where deferred[k].frameStart > start { deferred[k].frameStart += delta }
    }

    /// The log failed: acknowledgements not yet durable are never sent. Each is replaced by an
    /// UNAVAILABLE error for its request.
    mutating func failUnreleased(_ message: String) {
        let pending = Array(marks[markHead...])
        let cut = markHead == 0 ? released : marks[markHead - 1].end
        out.moveWriterIndex(to: max(cut, out.readerIndex))
        marks.removeSubrange(markHead...)
        deferred.removeAll()
        for m in pending {
            out.writeRaffleFrame(
                Frame(requestID: m.requestID, flags: m.flags, body: .error(code: .unavailable, message: "entries are not being acknowledged: \(message)")))
            marks.append(ReplyMark(lsn: 0, end: out.writerIndex, requestID: m.requestID, flags: m.flags))
        }
        cumulativeLSN = 0
    }

    /// Bytes the transport has taken past which the queue reclaims them even while replies wait
    /// (a connection or socket whose queue never empties under steady load must not grow forever).
    static let reclaimBytes = 65_536

    /// After the transport took every released byte: starts the buffer over (keeps its capacity);
    /// while replies still wait, moves them to the front once `reclaimBytes` were taken. Returns how
    /// many marks (sent replies) were dropped from the front of `marks`.
    @discardableResult
    mutating func compact() -> Int {
        guard out.readerIndex == released else { return 0 }  // released bytes not yet taken
        if out.readableBytes == 0 && !hasUnreleased {
            let dropped = marks.count
            out.clear()
            released = 0
            marks.removeAll(keepingCapacity: true)
            markHead = 0
            return dropped
        }
        let taken = out.readerIndex
        guard taken >= Self.reclaimBytes && taken * 2 >= out.writerIndex else { return 0 }
        out.discardReadBytes()
        released -= taken
        marks.removeFirst(markHead)
        for k in marks.indices { marks[k].end -= taken }
        for k in deferred.indices { deferred[k].frameStart -= taken }
        let dropped = markHead
        markHead = 0
        return dropped
    }

    mutating func reset() {
        out.clear()
        released = 0
        marks.removeAll(keepingCapacity: true)
        markHead = 0
        cumulativeLSN = 0
        deferred.removeAll(keepingCapacity: true)
        firstReplyFailed = false
    }
}

/// A frame that arrived in pieces, held in an ingest buffer preallocated at start-up (-1: none).
struct PartialFrame {
    var slot: Int32 = -1
    var fill = 0

    /// The request id of the frame cut short, for its TRUNCATED_FRAME reply: the header's when the
    /// header arrived whole and can be read (magic, version), else 0 (PROTOCOL.md §3).
    func requestID(_ loop: LoopContext) -> UInt64 {
        guard slot >= 0, fill >= Wire.headerSize else { return 0 }
        let bytes = UnsafeRawBufferPointer(loop.memory(of: slot))
        guard bytes[0] == 0x52, bytes[1] == 0x46, bytes[2] == Wire.version else { return 0 }
        return bytes.loadUnaligned(fromByteOffset: 12, as: UInt64.self).littleEndian
    }

    /// Gives the ingest buffer back.
    mutating func drop(_ loop: LoopContext) {
        if slot >= 0 { loop.giveBack(slot) }
        slot = -1
        fill = 0
    }
}

