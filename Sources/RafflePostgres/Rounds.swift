import RaffleCore
import RaffleLedger
import RaffleWire
import Synchronization

/// A raffle as this node knows it, with the entries it saw stored (`known`: retries of those are
/// answered `already_entered` without a round trip — only what PostgreSQL confirmed).
final class CachedRaffle {
    let spec: RaffleSpec
    var closedAt: Int64?
    var draw: DrawResult?
    let known = DedupeIndex()

    init(_ row: RaffleRow) {
        spec = row.spec
        closedAt = row.closedAt
    }

    /// The outcome of every valid entry when it is certain without asking PostgreSQL: closed (by
    /// time, or a close this node has seen) or not open yet. nil: PostgreSQL decides.
    func certainPhase(now: Int64) -> EntryOutcome? {
        if closedAt != nil || now >= spec.closesAt { return .raffleClosed }
        if now < spec.opensAt { return .raffleNotOpen }
        return nil
    }
}

/// One `raffled.raffles` row.
struct RaffleRow: Sendable {
    var id: UInt64
    var spec: RaffleSpec
    var seed: [UInt8]
    var closedAt: Int64?
}

/// Batches gathered for one statement: their entries side by side, with the outcomes decided so
/// far (`accepted` = PostgreSQL decides).
struct Round: Sendable {
    struct Batch: Sendable {
        var ticket: UInt64
        var raffle: UInt64
        var start: Int
        var count: Int
    }

    var users: [UInt64] = []
    var tickets: [UInt32] = []
    var outcomes: [EntryOutcome] = []
    var batches: [Batch] = []
    /// Entries left for PostgreSQL when admitted (for the backlog count).
    var sent: UInt64 = 0

    mutating func add(ticket: UInt64, batch: EntryBatchView, outcomes decided: UnsafeBufferPointer<EntryOutcome>, undecided: Int) {
        let start = users.count
        for i in 0..<batch.count {
            users.append(batch.userID(at: i))
            tickets.append(batch.tickets(at: i))
        }
        outcomes.append(contentsOf: decided)
        batches.append(Batch(ticket: ticket, raffle: batch.raffleID, start: start, count: batch.count))
        sent &+= UInt64(undecided)
    }
}

/// What a round's statement decided.
enum RoundResult: Sendable {
    /// Outcomes for every entry of the round (same positions as `Round.outcomes`); batches of
    /// raffles PostgreSQL does not have; raffle rows loaded on the way.
    case decided(outcomes: [EntryOutcome], unknown: Set<UInt64>, loaded: [RaffleRow])
    /// Nothing of the round is stored. `unreachable`: PostgreSQL could not be reached (new batches
    /// are refused until a probe answers).
    case failed(String, unreachable: Bool)
}

/// The ledger's mutable state, behind its mutex.
struct State {
    var raffles: [UInt64: CachedRaffle] = [:]
    var pending = Round()
    var inFlight = 0
    var nextTicket: UInt64 = 1
    /// Resolutions waiting for their event loop to ask (`resolve(ticket:into:)`), with the round
    /// that decided them. A loop asks right after the commit notification; one whose connection closed
    /// never asks, so `finish` drops what has waited `orphanRounds` rounds.
    var resolved: [UInt64: (resolution: Resolution, outcomes: [EntryOutcome], round: UInt64)] = [:]
    static let orphanRounds: UInt64 = 1_024
    /// Entries handed to PostgreSQL, and those it has decided (or that failed).
    var admitted: UInt64 = 0
    var decided: UInt64 = 0
    /// Rounds finished.
    var rounds: UInt64 = 0
    /// Entries this node inserted.
    var stored = 0
    var knownCount = 0
    var unreachable: String?
    var stopped = false
    var listeners: [@Sendable (Result<CommitPoint, LedgerError>) -> Void] = []

    /// Why new batches are refused now, if they are.
    var refusal: String? {
        if stopped { return "the server is shutting down" }
        return unreachable.map { "PostgreSQL is unreachable (\($0)); retry shortly" }
    }

    mutating func takeRound() -> Round {
        defer { pending = Round() }
        return pending
    }

    mutating func cache(_ row: RaffleRow) {
        if let cached = raffles[row.id] {
            if cached.closedAt == nil { cached.closedAt = row.closedAt }
        } else {
            raffles[row.id] = CachedRaffle(row)
        }
    }

    /// Records a round's end: resolutions for its tickets, what this node now knows is stored.
    mutating func finish(_ round: Round, _ result: RoundResult, knownLimit: Int) {
        rounds &+= 1
        decided &+= round.sent
        if rounds % Self.orphanRounds == 0 {
            let oldest = rounds &- Self.orphanRounds
            resolved = resolved.filter { $0.value.round >= oldest }
        }
        switch result {
        case .failed(let message, let unreachable):
            if unreachable { self.unreachable = message }
            for batch in round.batches { resolved[batch.ticket] = (.failed(message), [], rounds) }
        case .decided(let outcomes, let unknown, let loaded):
            for row in loaded { cache(row) }
            for batch in round.batches {
                if unknown.contains(batch.raffle) {
                    resolved[batch.ticket] = (.unknownRaffle, [], rounds)
                    continue
                }
                let slice = Array(outcomes[batch.start..<(batch.start + batch.count)])
                var accepted = 0
                let raffle = raffles[batch.raffle]
                for (k, outcome) in slice.enumerated() where outcome == .accepted || outcome == .alreadyEntered {
                    if outcome == .accepted { accepted += 1 }
                    if let raffle, knownCount < knownLimit, raffle.known.insert(round.users[batch.start + k]) { knownCount += 1 }
                }
                stored += accepted
                resolved[batch.ticket] = (.decided(accepted: accepted), slice, rounds)
            }
        }
    }
}

/// The ledger's state behind a mutex. `Mutex<State>` cannot be used: its closure takes the value
/// `inout sending`, and `admit` copies a batch view (raw pointers into an event loop's buffer) into
/// it, which region checking cannot prove disconnected.
///
/// `@unchecked Sendable`: `value` is read and written only inside `mutex.withLock`, and no
/// reference to a class inside it (`CachedRaffle`, `DedupeIndex`) is returned from `withLock` by
/// any caller (they return copies: specs, draws, counts).
final class Guarded: @unchecked Sendable {
    private let mutex = Mutex<Void>(())
    private var value = State()

    func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        try mutex.withLock { _ in try body(&value) }
    }
}
