import Foundation
import PostgresNIO
import RaffleCore
import RaffleLedger
import RaffleWire

extension PostgresLedger {
    /// Sends one round as one statement and decides every entry from what PostgreSQL returned.
    func commit(_ round: Round) async -> RoundResult {
        let ids = Set(round.batches.map(\.raffle))
        var specs: [UInt64: RaffleSpec] = state.withLock { s in
            var specs: [UInt64: RaffleSpec] = [:]
            for id in ids { if let r = s.raffles[id] { specs[id] = r.spec } }
            return specs
        }
        var loaded: [RaffleRow] = []
        do {
            let missing = ids.filter { specs[$0] == nil }
            if !missing.isEmpty { loaded = try await withTimeout { try await self.fetchRaffles(ids: Array(missing)) } }
        } catch {
            return failure(error)
        }
        for row in loaded { specs[row.id] = row.spec }

        // The entries PostgreSQL decides, in three arrays; ticket limits of raffles loaded just now.
        var outcomes = round.outcomes
        var raffles: [Int64] = []
        var users: [Int64] = []
        var tickets: [Int64] = []
        raffles.reserveCapacity(round.users.count)
        users.reserveCapacity(round.users.count)
        tickets.reserveCapacity(round.users.count)
        var unknown = Set<UInt64>()
        for batch in round.batches {
            guard let limit = specs[batch.raffle]?.maxTicketsPerUser else {
                unknown.insert(batch.raffle)
                continue
            }
            for i in batch.start..<(batch.start + batch.count) where outcomes[i] == .accepted {
                if round.tickets[i] > limit {
                    outcomes[i] = .invalidTickets
                    continue
                }
                raffles.append(Int64(id: batch.raffle))
                users.append(Int64(id: round.users[i]))
                tickets.append(Int64(round.tickets[i]))
            }
        }
        let named = ids.filter { !unknown.contains($0) }.map { Int64(id: $0) }
        guard !named.isEmpty else { return .decided(outcomes: outcomes, unknown: unknown, loaded: loaded) }

        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        var binds = PostgresBindings(capacity: 5)
        binds.append(raffles)
        binds.append(users)
        binds.append(tickets)
        binds.append(named)
        binds.append(now)
        let query = PostgresQuery(unsafeSQL: Schema.commitRound, binds: binds)
        var inserted = Set<Key>()
        var open = Set<UInt64>()
        var closedAt: [UInt64: Int64] = [:]
        var attempt = 0
        while true {
            attempt += 1
            do {
                // BEGIN, the statement, COMMIT: the outcomes count only once COMMIT has answered. A
                // statement alone (an implicit transaction) streams its rows before it commits, and a
                // server stopped in between (a fast shutdown, a crash) loses what was already read:
                // the PostgreSQL-restart test caught acks of entries that were not stored.
                let (raffles, users, opened, existing, closed) = try await withTimeout { [client, logger] in
                    try await client.withTransaction(logger: logger) { connection in
                        let rows = try await connection.query(query, logger: logger).collect()
                        guard let row = rows.first else { throw LedgerError(.unavailable, "the group-commit statement returned no row") }
                        return try row.decode(([Int64], [Int64], [Int64], [Int64], [Int64]).self)
                    }
                }
                inserted.removeAll(keepingCapacity: true)
                open.removeAll()
                closedAt.removeAll()
                inserted.reserveCapacity(users.count)
                for (r, u) in zip(raffles, users) { inserted.insert(Key(raffle: UInt64(bitPattern: r), user: UInt64(bitPattern: u))) }
                for r in opened { open.insert(UInt64(bitPattern: r)) }
                for (r, c) in zip(existing, closed) { closedAt[UInt64(bitPattern: r)] = c }
                break
            } catch where attempt < 4 && Self.isTransient(error) {
                // A deadlock or serialization failure rolled the whole statement back: run it again.
                continue
            } catch {
                return failure(error)
            }
        }

        for batch in round.batches where !unknown.contains(batch.raffle) {
            let range = batch.start..<(batch.start + batch.count)
            guard open.contains(batch.raffle) else {
                guard let closed = closedAt[batch.raffle] else {
                    unknown.insert(batch.raffle)
                    continue
                }
                // Not open when the round ran: closed (by a close, or by time), or not open yet.
                let phase: EntryOutcome = closed >= 0 || now >= (specs[batch.raffle]?.closesAt ?? .min) ? .raffleClosed : .raffleNotOpen
                for i in range where outcomes[i] == .accepted { outcomes[i] = phase }
                if closed >= 0 { state.withLock { s in if s.raffles[batch.raffle]?.closedAt == nil { s.raffles[batch.raffle]?.closedAt = closed } } }
                continue
            }
            for i in range where outcomes[i] == .accepted {
                // The first of this user's entries in the round that PostgreSQL inserted is the new
                // one; any other (a retry, another node's) was already there.
                let key = Key(raffle: batch.raffle, user: round.users[i])
                outcomes[i] = inserted.remove(key) != nil ? .accepted : .alreadyEntered
            }
        }
        return .decided(outcomes: outcomes, unknown: unknown, loaded: loaded)
    }

    private func failure(_ error: any Error) -> RoundResult {
        let message = explain(error)
        let unreachable = Self.isUnreachable(error)
        if unreachable {
            let first = state.withLock { s in
                defer { s.unreachable = message }
                return s.unreachable == nil
            }
            if first { logger.error("PostgreSQL is unreachable: refusing entries until it answers", metadata: ["error": "\(message)"]) }
        } else {
            logger.error("a group-commit round failed: its batches are answered unavailable", metadata: ["error": "\(message)"])
        }
        return .failed(message, unreachable: unreachable)
    }

    /// Errors after which running the same statement again is safe and likely to succeed.
    static func isTransient(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError, let state = error.serverInfo?[.sqlState] else { return false }
        return state == "40P01" || state == "40001"
    }

    /// Errors that say PostgreSQL cannot be reached (rather than refusing one statement).
    static func isUnreachable(_ error: any Error) -> Bool {
        if let error = error as? LedgerError { return error.kind == .unavailable }
        guard let error = error as? PSQLError else { return true }
        if let state = error.serverInfo?[.sqlState] {
            // 08: connection exception; 57: operator intervention (shutdown, starting up); 53: resources.
            return state.hasPrefix("08") || state.hasPrefix("57") || state.hasPrefix("53")
        }
        return true
    }

    /// Loads raffle rows (every raffle when `ids` is nil) into the cache; returns them.
    @discardableResult
    func loadRaffles(ids: [UInt64]?) async throws -> [RaffleRow] {
        let rows = try await fetchRaffles(ids: ids)
        state.withLock { s in for row in rows { s.cache(row) } }
        return rows
    }

    func fetchRaffles(ids: [UInt64]?) async throws -> [RaffleRow] {
        let query: PostgresQuery
        if let ids {
            let list = ids.map { Int64(id: $0) }
            query = "SELECT \(unescaped: Schema.raffleColumns) FROM raffled.raffles WHERE id = ANY(\(list)) ORDER BY id"
        } else {
            query = "SELECT \(unescaped: Schema.raffleColumns) FROM raffled.raffles ORDER BY id"
        }
        var rows: [RaffleRow] = []
        for try await t in try await client.query(query, logger: logger).decode(Schema.RaffleTuple.self) {
            rows.append(try Schema.row(t))
        }
        return rows
    }
}

/// An entry's key in a round's results.
struct Key: Hashable {
    var raffle: UInt64
    var user: UInt64
}
