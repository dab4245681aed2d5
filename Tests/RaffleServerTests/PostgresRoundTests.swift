import RaffleLedger
@testable import RafflePostgres
import Testing

/// The PostgreSQL ledger's round bookkeeping, without a database.
@Suite("PostgresLedger rounds")
struct PostgresRoundTests {
    func round(ticket: UInt64) -> Round {
        var round = Round()
        round.batches = [Round.Batch(ticket: ticket, raffle: 9, start: 0, count: 0)]
        return round
    }

    @Test func resolutionsNobodyAsksForAreDroppedAfterAWhile() {
        var state = State()
        state.finish(round(ticket: 1), .decided(outcomes: [], unknown: [9], loaded: []), knownLimit: 0)
        #expect(state.resolved[1]?.resolution == .unknownRaffle)
        for _ in 0..<(State.orphanRounds - 2) { state.finish(Round(), .failed("x", unreachable: false), knownLimit: 0) }
        state.finish(round(ticket: 2), .failed("PostgreSQL went away", unreachable: true), knownLimit: 0)
        #expect(state.resolved[1] != nil, "kept while its loop may still ask")
        #expect(state.unreachable == "PostgreSQL went away" && state.refusal?.contains("unreachable") == true)
        for _ in 0..<State.orphanRounds { state.finish(Round(), .failed("x", unreachable: false), knownLimit: 0) }
        #expect(state.resolved[1] == nil, "a closed connection's resolution does not stay forever")
        #expect(state.resolved[2] != nil, "one decided \(State.orphanRounds) rounds ago is kept")
        for _ in 0..<State.orphanRounds { state.finish(Round(), .failed("x", unreachable: false), knownLimit: 0) }
        #expect(state.resolved[2] == nil)
    }

    @Test func theURLSaysWhereAndRefusesWhatItCannotUse() throws {
        let c = try PostgresLedgerConfiguration(url: "postgres://raffled:s%40cret@db.internal:6432/raffles?sslmode=disable")
        #expect(c.target == "raffled@db.internal:6432/raffles")
        #expect(c.client.password == "s@cret")
        #expect(try PostgresLedgerConfiguration(url: "postgresql://db").target == "postgres@db:5432/postgres")
        #expect(throws: PostgresURLError.self) { try PostgresLedgerConfiguration(url: "mysql://db") }
        #expect(throws: PostgresURLError.self) { try PostgresLedgerConfiguration(url: "postgres://db/x?sslmode=sometimes") }
    }
}
