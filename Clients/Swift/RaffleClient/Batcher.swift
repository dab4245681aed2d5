import RaffleWire

/// Coalesces concurrent `enter` calls into batches per raffle: a batch goes out when it holds
/// `maxEntries` entries or `linger` after its first entry, whichever is first; each caller gets the
/// outcome of its own entry (a user entered twice in one batch gets `already_entered` the second time).
actor Batcher {
    private struct Waiter {
        var entry: Entry
        var continuation: CheckedContinuation<EntryOutcome, any Error>
    }

    private let maxEntries: Int
    private let linger: Duration
    private var pending: [UInt64: [Waiter]] = [:]
    private var generation: [UInt64: Int] = [:]

    init(maxEntries: Int, linger: Duration) {
        self.maxEntries = maxEntries
        self.linger = linger
    }

    func enqueue(_ entry: Entry, raffle: UInt64, client: RaffleClient) async throws -> EntryOutcome {
        try await withCheckedThrowingContinuation { continuation in
            pending[raffle, default: []].append(Waiter(entry: entry, continuation: continuation))
            let count = pending[raffle]?.count ?? 0
            if count >= maxEntries {
                flush(raffle, client: client)
            } else if count == 1 {
                let expected = generation[raffle, default: 0]
                let linger = self.linger
                Task {
                    try? await Task.sleep(for: linger)
                    self.flushIfStill(raffle, generation: expected, client: client)
                }
            }
        }
    }

    private func flushIfStill(_ raffle: UInt64, generation expected: Int, client: RaffleClient) {
        guard generation[raffle, default: 0] == expected else { return }
        flush(raffle, client: client)
    }

    /// Sends every batch being collected now and waits until each is answered (for `shutdown`).
    func flushAll(client: RaffleClient) async {
        let sent = pending.keys.compactMap { flush($0, client: client) }
        for task in sent { await task.value }
    }

    @discardableResult
    private func flush(_ raffle: UInt64, client: RaffleClient) -> Task<Void, Never>? {
        guard let waiters = pending.removeValue(forKey: raffle), !waiters.isEmpty else { return nil }
        generation[raffle, default: 0] += 1
        return Task {
            do {
                let outcomes = try await client.submit(waiters.map(\.entry), to: raffle)
                for (waiter, outcome) in zip(waiters, outcomes) { waiter.continuation.resume(returning: outcome) }
            } catch {
                for waiter in waiters { waiter.continuation.resume(throwing: error) }
            }
        }
    }
}
