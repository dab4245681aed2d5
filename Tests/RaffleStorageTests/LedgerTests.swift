import Foundation
import RaffleCore
import RaffleLedger
import RaffleStorage
import RaffleWire
import RaffleTestSupport
import Testing

/// Encodes a batch and runs it through `ledger.admit`, returning outcomes and the admission.
func submit(_ ledger: some Ledger, raffle: UInt64, _ entries: [Entry], now: Int64) throws -> ([EntryOutcome], Admission) {
    let bytes = try FrameEncoder.encode(Frame(requestID: 1, body: .entryBatch(raffleID: raffle, entries: entries)))
    return try bytes.withUnsafeBytes { raw in
        guard case .entryBatch(let batch)? = try FrameDecoder().decode(raw)?.payload else { throw VectorLikeError() }
        var outcomes = [EntryOutcome](repeating: .raffleClosed, count: batch.count)
        let admission = outcomes.withUnsafeMutableBufferPointer { ledger.admit(batch, now: now, outcomes: $0) }
        return (outcomes, admission)
    }
}

struct VectorLikeError: Error {}

func waitDurable(_ ledger: some Ledger, _ admission: Admission) {
    guard case .processed(_, let point) = admission else { return }
    while !ledger.isDurable(point) { usleep(100) }
}

let t0: Int64 = 1_800_000_000_000

@Suite("Local ledger")
struct LedgerTests {
    func makeRaffle(_ ledger: LocalLedger, winners: Int = 3, maxTickets: UInt32 = 5) throws -> RaffleInfo {
        let (info, point) = try ledger.createRaffle(
            RaffleSpec(title: "Sneaker drop", opensAt: t0, closesAt: t0 + 60_000, winners: winners, maxTicketsPerUser: maxTickets),
            now: t0
        ).get()
        while !ledger.isDurable(point) { usleep(100) }
        return info
    }

    @Test func oneEntryPerUserPerRaffle() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path)
        defer { ledger.shutdown() }
        let raffle = try makeRaffle(ledger)
        let (first, a1) = try submit(ledger, raffle: raffle.id, [Entry(userID: 1), Entry(userID: 2, tickets: 3), Entry(userID: 1)], now: t0 + 1)
        #expect(first == [.accepted, .accepted, .alreadyEntered])
        #expect(a1 == .processed(accepted: 2, commit: CommitPoint(lsn: ledger.log.appendedLSN)))
        let (again, a2) = try submit(ledger, raffle: raffle.id, [Entry(userID: 2, tickets: 3), Entry(userID: 3)], now: t0 + 2)
        #expect(again == [.alreadyEntered, .accepted])
        waitDurable(ledger, a2)
        #expect(ledger.raffle(raffle.id, now: t0)?.entries == 3)
        #expect(ledger.raffle(raffle.id, now: t0)?.tickets == 5)
        #expect(ledger.hasEntry(userID: 2, raffle: raffle.id) == true)
        #expect(ledger.hasEntry(userID: 9, raffle: raffle.id) == false)
        #expect(ledger.hasEntry(userID: 2, raffle: 999) == nil)
    }

    @Test func alreadyEnteredWaitsForTheLogPositionOfItsAdmission() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path)
        defer { ledger.shutdown() }
        let raffle = try makeRaffle(ledger)
        let (_, first) = try submit(ledger, raffle: raffle.id, [Entry(userID: 7)], now: t0 + 1)
        let (_, second) = try submit(ledger, raffle: raffle.id, [Entry(userID: 7)], now: t0 + 1)
        guard case .processed(0, let p2) = second, case .processed(1, let p1) = first else {
            Issue.record("unexpected admissions \(first) \(second)")
            return
        }
        #expect(p2 >= p1, "a duplicate is acknowledged only once the original is durable")
    }

    @Test func invalidEntriesAndRaffleTimes() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path)
        defer { ledger.shutdown() }
        let raffle = try makeRaffle(ledger, maxTickets: 2)
        let batch = [Entry(userID: 0), Entry(userID: 5, tickets: 3), Entry(userID: 6, reserved: 1), Entry(userID: 7, tickets: 2)]
        #expect(try submit(ledger, raffle: raffle.id, batch, now: t0).0 == [.invalidUserID, .invalidTickets, .invalidReserved, .accepted])
        #expect(try submit(ledger, raffle: raffle.id, [Entry(userID: 8)], now: t0 - 1).0 == [.raffleNotOpen])
        #expect(try submit(ledger, raffle: raffle.id, [Entry(userID: 8)], now: t0 + 60_000).0 == [.raffleClosed])
        #expect(try submit(ledger, raffle: 424_242, [Entry(userID: 8)], now: t0).1 == .unknownRaffle)
        #expect(ledger.raffle(raffle.id, now: t0)?.entries == 1)
    }

    /// From the log alone (no checkpoints), and from the checkpoint written at shutdown.
    @Test(arguments: [false, true]) func restartReplaysRafflesEntriesAndDraws(checkpoints: Bool) throws {
        let dir = TempDir()
        var drawn: RaffleInfo
        var id: UInt64
        do {
            let ledger = try LocalLedger(directory: dir.path, checkpointBytes: checkpoints ? 64 << 20 : 0)
            let raffle = try makeRaffle(ledger)
            id = raffle.id
            let (_, a) = try submit(ledger, raffle: raffle.id, (1...50).map { Entry(userID: $0, tickets: UInt32($0 % 5 + 1)) }, now: t0 + 1)
            waitDurable(ledger, a)
            drawn = try ledger.closeRaffle(raffle.id, now: t0 + 10).get().0
            ledger.shutdown()
        }
        let reopened = try LocalLedger(directory: dir.path)
        defer { reopened.shutdown() }
        #expect(reopened.replay.records == (checkpoints ? 0 : 3), "everything was in the checkpoint")
        #expect((reopened.recovery.checkpoint != nil) == checkpoints)
        #expect(reopened.recovery.checkpointEntries == (checkpoints ? 50 : 0))
        let info = try #require(reopened.raffle(id, now: t0 + 20))
        #expect(info == drawn, "same raffle, entries, seed and winners after a restart")
        #expect(info.state == .drawn && info.entries == 50)
        // New raffles after a restart get new ids.
        #expect(try makeRaffle(reopened).id == id + 1)
    }

    @Test func drawIsVerifiableFromTheExportAndTheRevealedSeed() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path)
        defer { ledger.shutdown() }
        let raffle = try makeRaffle(ledger, winners: 10)
        #expect(raffle.draw == nil)
        _ = try submit(ledger, raffle: raffle.id, (1...500).map { Entry(userID: $0 * 7919, tickets: UInt32($0 % 5 + 1)) }, now: t0 + 1)
        let closed = try ledger.closeRaffle(raffle.id, now: t0 + 2).get().0
        let draw = try #require(closed.draw)
        let seed = try #require(Draw.bytes(hex: draw.seed))
        #expect(Draw.commitment(seed: seed) == raffle.seedCommitment, "the revealed seed matches the published commitment")
        let export = try #require(ledger.entries(of: raffle.id))
        let recomputed = Draw.winners(entries: export, seed: seed, count: 10)
        #expect(recomputed.entryListHash == draw.entryListHash)
        #expect(recomputed.winners == draw.winners)
        #expect(Set(draw.winners).count == 10)
        // Closed: no more entries, and closing again changes nothing.
        #expect(try submit(ledger, raffle: raffle.id, [Entry(userID: 1)], now: t0 + 3).0 == [.raffleClosed])
        #expect(try ledger.closeRaffle(raffle.id, now: t0 + 4).get().0 == closed)
    }

    @Test func dueRafflesCloseThemselves() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path)
        defer { ledger.shutdown() }
        let raffle = try makeRaffle(ledger)
        #expect(ledger.closeDueRaffles(now: t0 + 59_999).isEmpty)
        #expect(ledger.closeDueRaffles(now: t0 + 60_000) == [raffle.id])
        #expect(ledger.raffle(raffle.id, now: t0)?.draw?.closedAt == t0 + 60_000)
    }

    @Test func indexStaysWithin24BytesPerEntry() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path, durability: .none)
        defer { ledger.shutdown() }
        let raffle = try makeRaffle(ledger)
        var user: UInt64 = 1
        var worst = 0.0
        for _ in 0..<250 {
            _ = try submit(ledger, raffle: raffle.id, (0..<4_000).map { i in Entry(userID: user + UInt64(i)) }, now: t0 + 1)
            user += 4_000
            worst = max(worst, ledger.stats().indexBytesPerEntry)
        }
        let stats = ledger.stats()
        #expect(stats.entries == 1_000_000)
        #expect(stats.indexBytesPerEntry <= 24, "\(stats.indexBytesPerEntry) bytes per entry")
        #expect(worst <= 24, "worst seen \(worst)")
    }
}

@Suite("Draw")
struct DrawTests {
    @Test func deterministicWeightedAndWithoutReplacement() {
        let entries = (1...1_000).map { Draw.Entry(userID: UInt64($0), tickets: $0 <= 10 ? 100 : 1) }
        let seed = [UInt8](repeating: 7, count: 32)
        let a = Draw.winners(entries: entries, seed: seed, count: 20)
        let b = Draw.winners(entries: entries.reversed(), seed: seed, count: 20)
        #expect(a.winners == b.winners && a.entryListHash == b.entryListHash, "input order does not matter")
        #expect(Set(a.winners).count == 20)
        // Ten users hold 1,000 of 1,990 tickets: they should take about half of the first picks.
        let heavy = a.winners.filter { $0 <= 10 }.count
        #expect(heavy >= 5, "heavy ticket holders won \(heavy) of 20")
        let other = Draw.winners(entries: entries, seed: [UInt8](repeating: 8, count: 32), count: 20)
        #expect(other.winners != a.winners)
        #expect(Draw.winners(entries: Array(entries.prefix(3)), seed: seed, count: 10).winners.count == 3)
        #expect(Draw.winners(entries: [], seed: seed, count: 10).winners.isEmpty)
    }

    @Test func everyEntryCanWin() {
        var wins = Set<UInt64>()
        for s in 0..<200 {
            let entries = (1...5).map { Draw.Entry(userID: UInt64($0), tickets: 1) }
            wins.formUnion(Draw.winners(entries: entries, seed: [UInt8(s), 1, 2], count: 1).winners)
        }
        #expect(wins == [1, 2, 3, 4, 5])
    }
}

@Suite("Dedupe index")
struct DedupeIndexTests {
    @Test func insertContainsAndGrowth() {
        let index = DedupeIndex(capacity: 4, seed: 42)
        var rng = SystemRandomNumberGenerator()
        var reference = Set<UInt64>()
        for _ in 0..<50_000 {
            let key = UInt64.random(in: 1...20_000, using: &rng)
            #expect(index.insert(key) == reference.insert(key).inserted)
        }
        #expect(index.count == reference.count)
        for key in UInt64(1)...20_000 { #expect(index.contains(key) == reference.contains(key)) }
        #expect(!index.insert(0) && !index.contains(0), "0 is never stored")
    }

    /// Tables of 2 MiB and more are anonymous mappings with huge pages (`DedupeIndex.hugeTableBytes`):
    /// growing from a small table into one, sized as one from the start, filled by `insertAll`, and
    /// given back (deinit) when a larger one replaces it — the same answers throughout.
    @Test func largeTablesBehaveAsSmallOnes() {
        let grown = DedupeIndex(capacity: 4, seed: 3)
        let sized = DedupeIndex(capacity: 600_000, seed: 3)
        #expect(sized.memoryBytes >= DedupeIndex.hugeTableBytes && grown.memoryBytes < DedupeIndex.hugeTableBytes)
        let keys = (UInt64(1)...400_000).map { $0 &* 0x9E37_79B9 }
        for key in keys {
            #expect(grown.insert(key))
            #expect(sized.insert(key))
        }
        #expect(grown.memoryBytes >= DedupeIndex.hugeTableBytes, "grew into a mapped table: \(grown.memoryBytes) bytes")
        #expect(grown.count == 400_000 && sized.count == 400_000)
        #expect(keys.allSatisfy { grown.contains($0) && sized.contains($0) })
        #expect(!grown.contains(7) && !sized.contains(7) && !grown.insert(keys[123]))
        let bulk = DedupeIndex(seed: 5)
        let notNew = keys.withUnsafeBufferPointer { bulk.insertAll($0) }
        #expect(notNew.isEmpty && bulk.count == keys.count && bulk.memoryBytes >= DedupeIndex.hugeTableBytes)
        #expect(keys.allSatisfy { bulk.contains($0) })
    }

    /// A sized table is untouched memory until `prefault` backs all of it at once (what creating a
    /// raffle with an expected count does), keeping what it holds; a small table is always backed.
    @Test func aSizedTableIsBackedAtOnceAndKeepsItsKeys() {
        let index = DedupeIndex(capacity: 1_500_000, seed: 11)
        #expect(index.memoryBytes >= 8 * DedupeIndex.hugeTableBytes)
        let keys = (UInt64(1)...3).map { $0 &* 0x9E37_79B9_7F4A_7C15 }
        for key in keys { #expect(index.insert(key)) }
        // Three slots touch at most three pages (or 2 MiB huge pages) of the table's eight or more.
        #expect(index.residentBytes < index.memoryBytes, "\(index.residentBytes) of \(index.memoryBytes) bytes backed before")
        #expect(index.prefault())
        #expect(index.residentBytes == index.memoryBytes)
        #expect(index.count == 3 && keys.allSatisfy { index.contains($0) } && !index.contains(7))
        #expect(!index.insert(keys[1]) && index.insert(7))
        let small = DedupeIndex(capacity: 100, seed: 11)
        #expect(small.prefault() && small.residentBytes == small.memoryBytes)
    }

    /// `insertAll` (start-up's bulk path) ends as inserting one by one in order would: the same
    /// stored set, and "not new" exactly where one-by-one insertion said false — into an empty
    /// index (sized at once) and into one already holding ids (grown), with repeats and zeros.
    @Test(arguments: [0, 3_000]) func insertAllMatchesOneByOne(stored: Int) {
        var rng = SystemRandomNumberGenerator()
        let existing = (0..<stored).map { _ in UInt64.random(in: 1...40_000, using: &rng) }
        let keys = (0..<60_000).map { i in i % 997 == 0 ? 0 : UInt64.random(in: 1...50_000, using: &rng) }
        let bulk = DedupeIndex(seed: 7)
        let single = DedupeIndex(seed: 7)
        for key in existing {
            _ = bulk.insert(key)
            _ = single.insert(key)
        }
        let expected = keys.indices.filter { !single.insert(keys[$0]) }
        let notNew = keys.withUnsafeBufferPointer { bulk.insertAll($0) }
        #expect(notNew == expected)
        #expect(bulk.count == single.count)
        #expect((UInt64(1)...50_000).allSatisfy { bulk.contains($0) == single.contains($0) })
        #expect(keys.withUnsafeBufferPointer { bulk.insertAll($0) }.count == keys.count, "a second time nothing is new")
    }
}
