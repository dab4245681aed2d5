import NIOCore
import NIOEmbedded
import RaffleAdmission
import RaffleCore
@testable import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// The reply queue's reserved acks, without sockets: a loop context over the deferred test ledger.
@Suite("Reply queue: acks reserved for a ledger that decides at commit")
struct ReplyQueueTests {
    let ledger = DeferredTestLedger()
    let loop: LoopContext
    let raffle: UInt64

    init() throws {
        let config = ServerConfiguration()
        loop = LoopContext(
            eventLoop: EmbeddedEventLoop(), ledger: ledger, admission: AdmissionController(config.admission), configuration: config,
            metrics: ServerMetrics(durability: "test"), slotCount: 1)
        guard case .success(let (info, _)) = ledger.createRaffle(RaffleSpec(title: "q", opensAt: 0, closesAt: Int64.max), now: 0) else {
            throw TestSupportError("no raffle")
        }
        raffle = info.id
    }

    /// Admits a batch through the ledger (as the entry path does) and reserves its ack.
    func reserve(_ users: [UInt64], requestID: UInt64, in queue: inout ReplyQueue, flags: FrameFlags = []) throws {
        let bytes = batchFrame(raffle: raffle, users: users, requestID: requestID)
        try bytes.withUnsafeBytes { raw in
            let view = try #require(try FrameDecoder(receiver: .server).decode(raw))
            guard case .entryBatch(let batch) = view.payload, case .deferred(let ticket) = ledger.admit(batch, now: 0, outcomes: loop.outcomes) else {
                throw TestSupportError("not deferred")
            }
            queue.reserveAck(ticket: ticket, requestID: requestID, raffleID: raffle, count: users.count, flags: flags, scratch: loop.outcomes)
        }
    }

    func pong(_ value: UInt64, requestID: UInt64, in queue: inout ReplyQueue) {
        queue.out.writeRaffleFrame(Frame(requestID: requestID, body: .pong(value)))
        queue.mark(lsn: 0, requestID: requestID)
    }

    func released(_ queue: ReplyQueue) throws -> [Frame] {
        try decodeFrames(Array(queue.out.getSlice(at: queue.out.readerIndex, length: queue.sendable)?.readableBytesView ?? ByteBufferView()))
    }

    @Test func nothingLeavesBeforeTheDecisionAndTheOrderHolds() throws {
        var queue = ReplyQueue()
        try reserve([1, 2], requestID: 1, in: &queue)
        pong(9, requestID: 2, in: &queue)
        let early = queue.advance(loop)
        #expect(!early && queue.sendable == 0, "the pong waits behind the undecided ack")
        ledger.commit(elsewhere: [2])
        let moved = queue.advance(loop)
        #expect(moved)
        let frames = try released(queue)
        #expect(frames.map(\.requestID) == [1, 2])
        #expect(frames.first?.outcomes == [.accepted, .alreadyEntered], "patched in place with the commit's decision")
        #expect(!queue.hasUnreleased && queue.deferred.isEmpty)
    }

    @Test func takenBytesAreReclaimedWhileARepliesWait() throws {
        var queue = ReplyQueue()
        for k in 0..<3_000 { pong(UInt64(k), requestID: UInt64(k + 1), in: &queue) }
        _ = queue.advance(loop)
        _ = queue.out.readSlice(length: queue.sendable)
        try reserve([40, 41], requestID: 9_000, in: &queue)
        pong(1, requestID: 9_001, in: &queue)
        let taken = queue.out.readerIndex
        #expect(taken >= ReplyQueue.reclaimBytes)
        let dropped = queue.compact()
        #expect(dropped == 3_000, "the sent replies' marks are dropped")
        #expect(queue.out.readerIndex == 0 && queue.marks.count == 2 && queue.markHead == 0 && queue.released == 0)
        let again = queue.compact()
        #expect(again == 0, "nothing more to reclaim while the ack waits")
        ledger.commit(elsewhere: [41])
        let moved = queue.advance(loop)
        #expect(moved)
        let frames = try released(queue)
        #expect(frames.map(\.requestID) == [9_000, 9_001], "the waiting replies moved intact")
        #expect(frames.first?.outcomes == [.accepted, .alreadyEntered], "the reserved ack patched at its new place")
        _ = queue.out.readSlice(length: queue.sendable)
        let last = queue.compact()
        #expect(last == 2 && queue.out.writerIndex == 0, "all sent: the buffer starts over")
    }

    @Test func aFailedCommitReplacesTheAckAndMovesWhatFollows() throws {
        var queue = ReplyQueue()
        try reserve([10, 11, 12, 13, 14, 15, 16, 17], requestID: 1, in: &queue, flags: .checksum)
        pong(7, requestID: 2, in: &queue)
        try reserve([20], requestID: 3, in: &queue)
        ledger.commit(failing: true)
        let moved = queue.advance(loop)
        #expect(moved)
        let frames = try released(queue)
        #expect(frames.map(\.requestID) == [1, 2, 3], "every reply, in order, with the lengths of the moved ones right")
        #expect(frames[0].errorCode == .unavailable && frames[0].flags.contains(.checksum), "a checksummed request gets a checksummed error")
        #expect(frames[1].body == .pong(7))
        #expect(frames[2].errorCode == .unavailable)
        #expect(queue.firstReplyFailed, "the HTTP status follows the first reply: 503")
        #expect(ledger.hasEntry(userID: 10, raffle: raffle) == false)
    }

    @Test func aRaffleFoundGoneAtCommitIsAnsweredUnknownRaffle() throws {
        // Every transport's replies go through this queue: a shared ledger that learns only at commit
        // that the raffle does not exist gets UNKNOWN_RAFFLE in the ack's place, in order.
        var queue = ReplyQueue()
        try reserve([40], requestID: 1, in: &queue)
        pong(3, requestID: 2, in: &queue)
        ledger.commit(unknownRaffle: true)
        let moved = queue.advance(loop)
        #expect(moved)
        let frames = try released(queue)
        #expect(frames.map(\.requestID) == [1, 2])
        #expect(frames[0].errorCode == .unknownRaffle && frames[1].body == .pong(3))
    }

    @Test func aChecksummedAckIsCompletedWithAValidChecksum() throws {
        var queue = ReplyQueue()
        try reserve([30, 31], requestID: 4, in: &queue, flags: .checksum)
        ledger.commit()
        let moved = queue.advance(loop)
        #expect(moved)
        let bytes = Array(queue.out.readableBytesView)
        let frames = try FrameDecoder(receiver: .client, requireChecksum: true).decodeAll(bytes)
        #expect(frames.first?.outcomes == [.accepted, .accepted])
    }
}
