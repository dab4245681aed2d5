import Foundation
import PostgresNIO
public import RaffleCore
public import RaffleLedger

// The admin and read calls: each a statement or two against PostgreSQL, so every node answers the
// same (a raffle made or closed on one node is seen by all).
extension PostgresLedger {
    public func createRaffle(_ spec: RaffleSpec, now: Int64) async -> Result<(RaffleInfo, CommitPoint), LedgerError> {
        if let problem = spec.problem { return .failure(LedgerError(.invalid, problem)) }
        let seed = Draw.makeSeed()
        let hex = Draw.hex(seed)
        do {
            let id: Int64 = try await withTimeout { [client, logger] in
                try await client.withTransaction(logger: logger) { connection in
                let rows = try await connection.query(
                    """
                    INSERT INTO raffled.raffles (title, opens_at, closes_at, winners, max_tickets, seed)
                    VALUES (\(spec.title), \(spec.opensAt), \(spec.closesAt), \(Int32(clamping: spec.winners)), \(Int64(spec.maxTicketsPerUser)), \(hex))
                    RETURNING id
                    """, logger: logger)
                for try await id in rows.decode(Int64.self) { return id }
                throw LedgerError(.unavailable, "PostgreSQL returned no id for the new raffle")
                }
            }
            let row = RaffleRow(id: UInt64(bitPattern: id), spec: spec, seed: seed, closedAt: nil)
            state.withLock { $0.cache(row) }
            return .success((info(row, now: now, entries: 0, tickets: 0, draw: nil), CommitPoint(lsn: 0)))
        } catch {
            return .failure(ledgerError(error))
        }
    }

    public func closeRaffle(_ id: UInt64, now: Int64) async -> Result<(RaffleInfo, CommitPoint), LedgerError> {
        do {
            // One statement, one transaction: it waits for the rounds that hold the raffle's row
            // (FOR SHARE), and every round after it sees the raffle closed.
            _ = try await withTimeout { [client, logger] in
                try await client.withTransaction(logger: logger) { connection in
                    try await connection.query(
                        "UPDATE raffled.raffles SET closed_at = LEAST(\(now), closes_at) WHERE id = \(Int64(id: id)) AND closed_at IS NULL",
                        logger: logger
                    ).collect().count
                }
            }
            guard let row = try await withTimeout({ try await self.fetchRaffles(ids: [id]).first }) else {
                return .failure(LedgerError(.notFound, "raffle \(id) does not exist"))
            }
            state.withLock { $0.cache(row) }
            let draw = try await ensureDraw(row)
            return .success((info(row, now: now, entries: draw.entries, tickets: draw.tickets, draw: draw), CommitPoint(lsn: 0)))
        } catch {
            return .failure(ledgerError(error))
        }
    }

    public func closeDueRaffles(now: Int64) async -> [UInt64] {
        do {
            // Whichever node's UPDATE closes a raffle draws it; the others find it closed.
            let ids: [UInt64] = try await withTimeout { [client, logger] in
                try await client.withTransaction(logger: logger) { connection in
                    var ids: [UInt64] = []
                    let rows = try await connection.query(
                        "UPDATE raffled.raffles SET closed_at = closes_at WHERE closed_at IS NULL AND closes_at <= \(now) RETURNING id",
                        logger: logger)
                    for try await id in rows.decode(Int64.self) { ids.append(UInt64(bitPattern: id)) }
                    return ids
                }
            }
            var drawn: [UInt64] = []
            for id in ids {
                guard let row = try await fetchRaffles(ids: [id]).first else { continue }
                state.withLock { $0.cache(row) }
                _ = try await ensureDraw(row)
                drawn.append(id)
            }
            return drawn
        } catch {
            logger.warning("closing due raffles failed; will try again", metadata: ["error": "\(explain(error))"])
            return []
        }
    }

    public func raffle(_ id: UInt64, now: Int64) async throws(LedgerError) -> RaffleInfo? {
        do {
            guard let row = try await withTimeout({ try await self.fetchRaffles(ids: [id]).first }) else { return nil }
            state.withLock { $0.cache(row) }
            return try await infoFromDatabase(row, now: now)
        } catch {
            throw ledgerError(error)
        }
    }

    public func raffles(now: Int64) async throws(LedgerError) -> [RaffleInfo] {
        do {
            var infos: [RaffleInfo] = []
            for row in try await withTimeout({ try await self.loadRaffles(ids: nil) }) {
                infos.append(try await infoFromDatabase(row, now: now))
            }
            return infos
        } catch {
            throw ledgerError(error)
        }
    }

    public func hasEntry(userID: UInt64, raffle id: UInt64) async throws(LedgerError) -> Bool? {
        do {
            return try await withTimeout { [client, logger] in
                let rows = try await client.query(
                    """
                    SELECT (SELECT count(*) FROM raffled.raffles WHERE id = \(Int64(id: id))),
                           (SELECT count(*) FROM raffled.entries WHERE raffle_id = \(Int64(id: id)) AND user_id = \(Int64(id: userID)))
                    """, logger: logger)
                for try await (raffles, entries) in rows.decode((Int64, Int64).self) { return raffles == 0 ? nil : entries > 0 }
                return nil
            }
        } catch {
            throw ledgerError(error)
        }
    }

    public func entries(of id: UInt64) async throws(LedgerError) -> [Draw.Entry]? {
        do {
            guard try await withTimeout({ try await self.fetchRaffles(ids: [id]).first }) != nil else { return nil }
            return try await readEntries(id)
        } catch {
            throw ledgerError(error)
        }
    }

    // MARK: - Helpers

    /// The canonical entry list (by user id) as PostgreSQL has it now.
    func readEntries(_ id: UInt64) async throws -> [Draw.Entry] {
        var entries: [Draw.Entry] = []
        let rows = try await client.query("SELECT user_id, tickets FROM raffled.entries WHERE raffle_id = \(Int64(id: id))", logger: logger)
        for try await (user, tickets) in rows.decode((Int64, Int64).self) {
            entries.append(Draw.Entry(userID: UInt64(bitPattern: user), tickets: UInt32(clamping: tickets)))
        }
        return Draw.canonical(entries)
    }

    /// The draw of a closed raffle: the stored one, or computed from the entries (Protocol/DRAW.md)
    /// and stored. Every node computes the same, so whichever stores first is the draw.
    func ensureDraw(_ row: RaffleRow) async throws -> DrawResult {
        if let cached = state.withLock({ $0.raffles[row.id]?.draw }) { return cached }
        guard let closedAt = row.closedAt else { throw LedgerError(.conflict, "raffle \(row.id) is not closed") }
        let stored = try await client.query("SELECT result FROM raffled.draws WHERE raffle_id = \(Int64(id: row.id))", logger: logger)
        var draw: DrawResult?
        for try await text in stored.decode(String.self) { draw = try JSONDecoder().decode(DrawResult.self, from: Data(text.utf8)) }
        if draw == nil {
            let entries = try await readEntries(row.id)
            let (hash, winners) = Draw.winners(entries: entries, seed: row.seed, count: row.spec.winners)
            let computed = DrawResult(
                closedAt: closedAt, entryListHash: hash, seed: Draw.hex(row.seed), entries: entries.count,
                tickets: entries.reduce(0) { $0 + UInt64($1.tickets) }, winners: winners)
            let json = String(decoding: try JSONEncoder().encode(computed), as: UTF8.self)
            try await client.query(
                "INSERT INTO raffled.draws (raffle_id, result) VALUES (\(Int64(id: row.id)), \(json)) ON CONFLICT DO NOTHING", logger: logger)
            draw = computed
        }
        guard let draw else { throw LedgerError(.unavailable, "no draw for raffle \(row.id)") }
        state.withLock { s in s.raffles[row.id]?.draw = draw }
        return draw
    }

    private func infoFromDatabase(_ row: RaffleRow, now: Int64) async throws -> RaffleInfo {
        if row.closedAt != nil {
            let draw = try await ensureDraw(row)
            return info(row, now: now, entries: draw.entries, tickets: draw.tickets, draw: draw)
        }
        let rows = try await client.query(
            "SELECT count(*), coalesce(sum(tickets), 0)::int8 FROM raffled.entries WHERE raffle_id = \(Int64(id: row.id))", logger: logger)
        var counts: (Int64, Int64) = (0, 0)
        for try await c in rows.decode((Int64, Int64).self) { counts = c }
        return info(row, now: now, entries: Int(counts.0), tickets: UInt64(max(counts.1, 0)), draw: nil)
    }

    private func info(_ row: RaffleRow, now: Int64, entries: Int, tickets: UInt64, draw: DrawResult?) -> RaffleInfo {
        let phase: RaffleState = row.closedAt != nil ? .drawn : now < row.spec.opensAt ? .scheduled : .open
        return RaffleInfo(
            id: row.id, spec: row.spec, seedCommitment: Draw.commitment(seed: row.seed), state: phase, entries: entries, tickets: tickets,
            draw: draw)
    }

    private func ledgerError(_ error: any Error) -> LedgerError {
        if let error = error as? LedgerError { return error }
        return LedgerError(.unavailable, "PostgreSQL: \(RafflePostgres.explain(error))")
    }
}
