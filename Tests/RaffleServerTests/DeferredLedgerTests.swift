import Foundation
import Logging
import NIOCore
import RaffleCore
import RaffleHTTP2
import RaffleHTTP2Client
import RaffleLedger
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Synchronization
import Testing

/// A test double of a ledger shared by several nodes (the PostgreSQL issue's shape): `admit` only
/// takes the batch; the outcomes are decided when the test calls `commit` — `accepted` for a user the
/// ledger has not stored, `already_entered` for one it has or that `elsewhere` names (entered through
/// another node) — or the commit fails when told to. Commit notifications go to the server as a real
/// ledger's would.
final class DeferredTestLedger: Ledger {
    private struct Taken {
        var ticket: UInt64
        var raffle: UInt64
        var users: [UInt64]
    }

    private struct State {
        var raffles: [UInt64: RaffleSpec] = [:]
        var stored: [UInt64: Set<UInt64>] = [:]
        var taken: [Taken] = []
        var decided: [UInt64: (Resolution, [EntryOutcome])] = [:]
        var callbacks: [@Sendable (Result<CommitPoint, LedgerError>) -> Void] = []
        var nextTicket: UInt64 = 1
        var commits: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Batches taken and not yet committed.
    var takenCount: Int { state.withLock { $0.taken.count } }

    /// Decides every batch taken so far (or fails them all, or finds their raffle gone — as a shared
    /// ledger learns only at commit), then tells the server.
    func commit(failing: Bool = false, unknownRaffle: Bool = false, elsewhere: Set<UInt64> = []) {
        let (callbacks, point) = state.withLock { s -> ([@Sendable (Result<CommitPoint, LedgerError>) -> Void], CommitPoint) in
            for batch in s.taken {
                if failing {
                    s.decided[batch.ticket] = (.failed("injected commit failure"), [])
                    continue
                }
                if unknownRaffle {
                    s.decided[batch.ticket] = (.unknownRaffle, [])
                    continue
                }
                var outcomes: [EntryOutcome] = []
                for user in batch.users {
                    if elsewhere.contains(user) || s.stored[batch.raffle, default: []].contains(user) {
                        outcomes.append(.alreadyEntered)
                    } else {
                        s.stored[batch.raffle, default: []].insert(user)
                        outcomes.append(.accepted)
                    }
                }
                s.decided[batch.ticket] = (.decided(accepted: outcomes.filter { $0 == .accepted }.count), outcomes)
            }
            s.taken.removeAll()
            s.commits += 1
            return (s.callbacks, CommitPoint(lsn: s.commits))
        }
        for callback in callbacks { callback(.success(point)) }
    }

    /// Waits (bounded) until `count` batches have been taken.
    func waitForTaken(_ count: Int) async {
        for _ in 0..<400 where takenCount < count { try? await Task.sleep(for: .milliseconds(5)) }
    }

    func admit(_ batch: EntryBatchView, now: Int64, outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Admission {
        state.withLock { s in
            guard s.raffles[batch.raffleID] != nil else { return .unknownRaffle }
            let ticket = s.nextTicket
            s.nextTicket += 1
            s.taken.append(Taken(ticket: ticket, raffle: batch.raffleID, users: (0..<batch.count).map { batch.userID(at: $0) }))
            return .deferred(ticket: ticket)
        }
    }

    func resolve(ticket: UInt64, into outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Resolution? {
        state.withLock { s in
            guard let (resolution, decided) = s.decided.removeValue(forKey: ticket) else { return nil }
            for (i, outcome) in decided.enumerated() { outcomes[i] = outcome }
            return resolution
        }
    }

    func isDurable(_ point: CommitPoint) -> Bool { state.withLock { point.lsn <= $0.commits } }

    func onCommit(_ callback: @escaping @Sendable (Result<CommitPoint, LedgerError>) -> Void) {
        state.withLock { $0.callbacks.append(callback) }
    }

    func createRaffle(_ spec: RaffleSpec, now: Int64) -> Result<(RaffleInfo, CommitPoint), LedgerError> {
        let id = state.withLock { s -> UInt64 in
            let id = UInt64(s.raffles.count + 1)
            s.raffles[id] = spec
            return id
        }
        return .success((info(id, spec, entries: 0), CommitPoint(lsn: 0)))
    }

    func closeRaffle(_ id: UInt64, now: Int64) -> Result<(RaffleInfo, CommitPoint), LedgerError> {
        .failure(LedgerError(.invalid, "the test ledger does not draw"))
    }

    func closeDueRaffles(now: Int64) -> [UInt64] { [] }

    func raffle(_ id: UInt64, now: Int64) -> RaffleInfo? {
        state.withLock { s in s.raffles[id].map { info(id, $0, entries: s.stored[id, default: []].count) } }
    }

    func raffles(now: Int64) -> [RaffleInfo] {
        state.withLock { s in s.raffles.keys.sorted().compactMap { id in s.raffles[id].map { info(id, $0, entries: s.stored[id, default: []].count) } } }
    }

    func hasEntry(userID: UInt64, raffle id: UInt64) -> Bool? {
        state.withLock { s in s.raffles[id] == nil ? nil : s.stored[id, default: []].contains(userID) }
    }

    func entries(of id: UInt64) -> [Draw.Entry]? { nil }

    func stats() -> LedgerStats {
        LedgerStats(raffles: 0, entries: 0, indexBytes: 0, indexBytesPerEntry: 0, logAppendedBytes: 0, logDurableBytes: 0, commits: 0, durability: "test")
    }

    var failureReason: String? { nil }
    var durability: LedgerDurability { .fsync }

    func shutdown() -> String? { nil }

    private func info(_ id: UInt64, _ spec: RaffleSpec, entries: Int) -> RaffleInfo {
        RaffleInfo(id: id, spec: spec, seedCommitment: "", state: .open, entries: entries, tickets: UInt64(entries), draw: nil)
    }
}

/// The seam, end to end: a ledger that decides at commit, behind every transport.
@Suite("A ledger that decides at commit, over every transport", .timeLimit(.minutes(1)))
struct DeferredLedgerTests {
    static func start() async throws -> (RaffleServer, DeferredTestLedger, UInt64) {
        let ledger = DeferredTestLedger()
        let server = try await RaffleServer.start(configuration: .forTests(), ledger: ledger, logger: .quiet("deferred-test"))
        guard case .success(let (info, _)) = ledger.createRaffle(RaffleSpec(title: "t", opensAt: 0, closesAt: Int64.max), now: 0) else {
            throw TestSupportError("no raffle")
        }
        return (server, ledger, info.id)
    }

    @Test func http2AcksCarryTheOutcomesDecidedAtCommitAndAFailedCommitIsNeverAcknowledged() async throws {
        let (server, ledger, raffle) = try await Self.start()
        let client = try await HTTP2Client.connect(host: "127.0.0.1", port: server.port, group: ServerFixture.group)
        let posted = Task { try await client.request(method: "POST", path: Wire.entriesPath, headers: [framesType], body: batchFrame(raffle: raffle, users: [1, 2, 3], requestID: 7)) }
        await ledger.waitForTaken(1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(ledger.takenCount == 1)
        ledger.commit(elsewhere: [2])  // user 2 entered through another node
        let response = try await posted.value
        let frames = try decodeFrames(Array(buffer: response.body))
        #expect(response.status == 200 && frames.first?.requestID == 7)
        #expect(frames.first?.outcomes == [.accepted, .alreadyEntered, .accepted], "decided at commit, not at admission")
        // A commit that fails: the request gets UNAVAILABLE, the entry is not stored.
        let failing = Task { try await client.request(method: "POST", path: Wire.entriesPath, headers: [framesType], body: batchFrame(raffle: raffle, users: [4], requestID: 8)) }
        await ledger.waitForTaken(1)
        ledger.commit(failing: true)
        let refused = try await failing.value
        #expect(refused.status == 503)
        #expect(refused.header("retry-after") == "1", "UNAVAILABLE carries a floor for the client's backoff")
        #expect(try decodeFrames(Array(buffer: refused.body)).first?.errorCode == .unavailable)
        #expect(ledger.hasEntry(userID: 4, raffle: raffle) == false)
        await client.close()
        await server.shutdown()
    }

    @Test func rawTCPKeepsOrderBehindADeferredAck() async throws {
        let (server, ledger, raffle) = try await Self.start()
        let s = try FrameSocket(port: try #require(server.tcpPort))
        let ping = try FrameEncoder.encode(Frame(requestID: 2, body: .ping(42)))
        s.send(batchFrame(raffle: raffle, users: [10, 11], requestID: 1) + ping + batchFrame(raffle: raffle, users: [12], requestID: 3))
        await ledger.waitForTaken(2)
        #expect(s.read(frames: 1, for: 0.2).frames.isEmpty, "nothing leaves before the ledger decides the first batch")
        ledger.commit(elsewhere: [11])
        let frames = s.read(frames: 3).frames
        #expect(frames.map(\.requestID) == [1, 2, 3], "the pong waited behind the reserved ack")
        #expect(frames.first?.outcomes == [.accepted, .alreadyEntered])
        s.send(batchFrame(raffle: raffle, users: [13], requestID: 4))
        await ledger.waitForTaken(1)
        ledger.commit(failing: true)
        #expect(s.read(frames: 1).frames.first?.errorCode == .unavailable, "a failed commit: UNAVAILABLE, and the connection goes on")
        await server.shutdown()
    }

    @Test func udpSendsTheDecidedAckOnlyAfterTheCommit() async throws {
        let (server, ledger, raffle) = try await Self.start()
        let u = DatagramSocket(port: try #require(server.udpPort))
        let request = try checksummed(Frame(requestID: 5, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 20), Entry(userID: 21)])))
        u.send(request)
        await ledger.waitForTaken(1)
        #expect(u.receive() == nil, "no ack before the commit")
        ledger.commit(elsewhere: [20])
        let ack = try FrameDecoder(receiver: .client, requireChecksum: true).decodeAll(try #require(u.receive()))
        #expect(ack.first?.requestID == 5 && ack.first?.outcomes == [.alreadyEntered, .accepted])
        let second = try checksummed(Frame(requestID: 6, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 22)])))
        u.send(second)
        await ledger.waitForTaken(1)
        ledger.commit(failing: true)
        let refused = try #require(u.receive())
        #expect(refused.count <= second.count, "no reply larger than its request")
        #expect(try FrameDecoder(receiver: .client, requireChecksum: true).decodeAll(refused).first?.errorCode == .unavailable)
        await server.shutdown()
    }

    @Test func http1WaitsForTheDecisionToo() async throws {
        let (server, ledger, raffle) = try await Self.start()
        let s = try RawSocket(port: server.port)
        s.send(http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [30], requestID: 9)))
        await ledger.waitForTaken(1)
        #expect(s.readBytes(for: 0.2).bytes.isEmpty, "no response head before the commit")
        ledger.commit()
        let (bytes, _) = s.readBytes(for: 3) { HTTP1Response.parseAll($0).count >= 1 }
        let response = try #require(HTTP1Response.parseAll(bytes).first)
        let frames = try decodeFrames(response.body)
        #expect(response.status == 200 && frames.first?.outcomes == [.accepted])
        // A commit that fails: 503 with the same retry-after floor as over HTTP/2.
        s.send(http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [31], requestID: 10)))
        await ledger.waitForTaken(1)
        ledger.commit(failing: true)
        let (more, _) = s.readBytes(for: 3) { HTTP1Response.parseAll($0).count >= 1 }
        let refused = try #require(HTTP1Response.parseAll(more).first)
        #expect(refused.status == 503 && refused.header("retry-after") == "1")
        #expect(try decodeFrames(refused.body).first?.errorCode == .unavailable)
        await server.shutdown()
    }
}
