import Foundation
import Logging
import RaffleAdmission
import RaffleClient
import RaffleClientHTTP2
import RaffleCore
import RaffleLedger
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("Backoff and retry budget (seeded, injected time)")
struct BackoffTests {
    @Test func fullJitterStaysWithinTheExponentialBoundAndCap() {
        var rng = SeededGenerator(seed: 1)
        let backoff = Backoff(base: .milliseconds(10), cap: .milliseconds(500))
        var delays: [Duration] = []
        var it = backoff.makeIterator()
        for _ in 0..<12 { delays.append(it.next(using: &rng)) }
        for (n, d) in delays.enumerated() {
            let bound = min(Duration.milliseconds(500), .milliseconds(10) * (1 << n))
            #expect(d >= .zero && d <= bound, "attempt \(n): \(d) > \(bound)")
        }
        // Spread: many clients' first delays cover the range rather than clumping.
        var firsts = Set<Int64>()
        for seed in 0..<200 {
            var r = SeededGenerator(seed: UInt64(seed))
            var i = backoff.makeIterator()
            firsts.insert(i.next(using: &r).components.attoseconds / 1_000_000_000_000_000)
        }
        #expect(firsts.count >= 8, "first delays spread over 0…10 ms")
        // The same seed gives the same sequence.
        var again = SeededGenerator(seed: 1)
        var it2 = backoff.makeIterator()
        #expect((0..<12).map { _ in it2.next(using: &again) } == delays)
    }

    @Test func decorrelatedJitterStaysBetweenBaseAndCap() {
        var rng = SeededGenerator(seed: 9)
        var it = Backoff(base: .milliseconds(20), cap: .seconds(1), jitter: .decorrelated).makeIterator()
        for _ in 0..<50 {
            let d = it.next(using: &rng)
            #expect(d >= .milliseconds(20) && d <= .seconds(1))
        }
    }

    @Test func budgetAllowsARatioOfRequestsPlusAFloor() {
        let budget = RetryBudget(ratio: 0.2, minimumPerSecond: 2)
        let t0 = ContinuousClock.now
        for _ in 0..<10 { budget.deposit() }  // 10 requests: 2 retries earned
        var allowed = 0
        while budget.withdraw(now: t0) { allowed += 1 }
        #expect(allowed == 2 + 2, "ratio (2) plus the per-second floor (2)")
        #expect(!budget.withdraw(now: t0))
        #expect(budget.withdraw(now: t0 + .seconds(1)), "the floor refills with time")
    }
}

@Suite("RaffleClient against a real raffled on 127.0.0.1", .timeLimit(.minutes(1)))
struct ClientEndToEndTests {
    func server(_ configure: (inout ServerConfiguration) -> Void = { _ in }) async throws -> (RaffleServer, TempDir) {
        try await TestServer.start(configure)
    }

    @Test func submitsEntersAndAdminCalls() async throws {
        let (s, dir) = try await server()
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: .init(adminKey: testAdminKey))
        let raffle = try await client.createRaffle(title: "Drop", duration: .seconds(600), winners: 2)
        #expect(try await client.submit([Entry(userID: 1), Entry(userID: 2), Entry(userID: 1)], to: raffle.id) == [.accepted, .accepted, .alreadyEntered])
        // Concurrent single entries are coalesced, each caller getting its own outcome.
        let outcomes = try await withThrowingTaskGroup(of: EntryOutcome.self) { group in
            for user in UInt64(100)..<UInt64(300) { group.addTask { try await client.enter(user: user, raffle: raffle.id) } }
            return try await group.reduce(into: [EntryOutcome]()) { $0.append($1) }
        }
        #expect(outcomes.count == 200 && outcomes.allSatisfy { $0 == .accepted })
        #expect(client.attemptCount < 50, "200 entries went out in a few batches (\(client.attemptCount) requests)")
        #expect(try await client.raffle(raffle.id).entries == 202)
        let drawn = try await client.close(raffle.id)
        #expect(drawn.draw?.winners.count == 2)
        #expect(try await client.winners(raffle.id) == drawn.draw)
        #expect(try await client.export(raffle.id).hasPrefix("user_id,tickets"))
        await client.transport.close()
        await s.shutdown()
        _ = dir
    }

    /// `expectedEntries` sizes a raffle's index at creation: taking that many entries does not
    /// grow it (a raffle created without it does grow); out-of-range values are refused.
    @Test func anExpectedEntryCountSizesTheIndexOnce() async throws {
        let (s, dir) = try await server()
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: .init(adminKey: testAdminKey))
        func indexBytes() async throws -> Double {
            guard case .number(let n)? = try await client.stats()["indexBytes"] else { throw RaffleClientError(.invalidResponse, "no indexBytes") }
            return n
        }
        func fill(_ raffle: UInt64, from first: UInt64) async throws {
            for start in stride(from: first, to: first + 40_000, by: 1_000) {
                let outcomes = try await client.submit((start..<(start + 1_000)).map { Entry(userID: $0) }, to: raffle)
                #expect(outcomes.allSatisfy { $0 == .accepted })
            }
        }
        let sized = try await client.createRaffle(title: "Sized", duration: .seconds(600), expectedEntries: 40_000)
        #expect(sized.spec.expectedEntries == 40_000, "echoed in the spec")
        let before = try await indexBytes()
        #expect(before >= 40_000 * 8, "room for 40,000 ids from the start (\(before) bytes)")
        try await fill(sized.id, from: 1)
        #expect(try await indexBytes() == before, "40,000 entries later the index has not grown")
        let plain = try await client.createRaffle(title: "Plain", duration: .seconds(600))
        #expect(plain.spec.expectedEntries == nil)
        let beforePlain = try await indexBytes()
        try await fill(plain.id, from: 1)
        #expect(try await indexBytes() > beforePlain, "without the hint the index grows as entries come")
        for bad in [-1, RaffleSpec.maxExpectedEntries + 1] {
            do {
                _ = try await client.createRaffle(title: "Bad", duration: .seconds(600), expectedEntries: bad)
                Issue.record("expectedEntries \(bad) must be refused")
            } catch let error as RaffleClientError {
                #expect(error.kind == .http(400) && error.message.contains("expectedEntries"), "\(error)")
            }
        }
        await client.transport.close()
        await s.shutdown()
        _ = dir
    }

    @Test func throttledClientsWaitForTheRetryAfterAndSucceed() async throws {
        let (s, dir) = try await server { $0.admission.anonymous = RateLimit(ratePerSecond: 100, burst: 10) }
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.maxBatchEntries = 4
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: config)
        let raffle = try await client.createRaffle(title: "Busy", duration: .seconds(600))
        let start = ContinuousClock.now
        for k in UInt64(0)..<10 {
            let outcomes = try await client.submit((1...4).map { Entry(userID: k * 10 + $0) }, to: raffle.id)
            #expect(outcomes.allSatisfy { $0 == .accepted })
        }
        let elapsed = ContinuousClock.now - start
        // 10 batches of cost 5 at 100/s with a burst of 10: the client must have waited, not failed.
        #expect(elapsed >= .milliseconds(300))
        #expect(client.attemptCount <= 40, "attempts bounded: \(client.attemptCount)")
        #expect(try await client.raffle(raffle.id).entries == 40)
        await client.transport.close()
        await s.shutdown()
        _ = dir
    }

    @Test func nonRetryableErrorsSurfaceAtOnce() async throws {
        let (s, dir) = try await server()
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: .init(adminKey: testAdminKey))
        do {
            _ = try await client.submit([Entry(userID: 1)], to: 999)
            Issue.record("an unknown raffle must fail")
        } catch let error as RaffleClientError {
            #expect(error.kind == .server(.unknownRaffle))
            #expect(error.message.contains("999"))
        }
        #expect(client.attemptCount == 1, "not retried")
        await client.transport.close()
        await s.shutdown()
        _ = dir
    }

    @Test func aServerThatIsDownGivesAClearErrorWhenItsRetriesRunOut() async throws {
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        // The call ends when its retry budget is spent (two retries at once, then two a second), not at
        // the deadline: a 5 s deadline once passed before the first refused connect came back on a
        // loaded CI machine (suites run in parallel on two cores), leaving no time for a retry. The
        // deadline is only the bound now.
        config.retryRatio = 0
        config.minimumRetriesPerSecond = 2
        config.deadline = .seconds(60)
        config.attemptTimeout = .milliseconds(500)  // a connect stalled by a loaded machine still leaves room to retry
        config.backoff = Backoff(base: .milliseconds(20), cap: .milliseconds(100))
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: 1), configuration: config)
        do {
            _ = try await client.submit([Entry(userID: 1)], to: 1)
            Issue.record("nothing listens on port 1")
        } catch let error as RaffleClientError {
            #expect(error.kind == .deadlineExceeded || error.kind == .retryBudgetExhausted)
            #expect((error.underlying as? RaffleClientError)?.message.contains("cannot connect") == true, "\(error)")
        }
        #expect(client.attemptCount > 1, "it retried before giving up")
    }

    /// Attempts a hung server never answers time out after `attemptTimeout` (the connection's
    /// deadline sweep), and the call ends at its deadline naming the timeout as the cause.
    @Test func unansweredAttemptsTimeOut() async throws {
        let silent = try SilentListener()
        defer { silent.close() }
        var config = RaffleClientConfiguration()
        config.attemptTimeout = .milliseconds(100)
        config.deadline = .seconds(3)  // room for retries on a machine busy with other suites
        config.backoff = Backoff(base: .milliseconds(10), cap: .milliseconds(20))
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: silent.port), configuration: config)
        do {
            _ = try await client.submit([Entry(userID: 7)], to: 1)
            Issue.record("the hung server answers nothing")
        } catch let error as RaffleClientError {
            #expect(error.kind == .deadlineExceeded || error.kind == .retryBudgetExhausted, "\(error)")
            #expect((error.underlying as? RaffleClientError)?.kind == .timedOut, "\(error)")
        }
        // How many attempts fit in the deadline depends on the machine (a test suite busy with blocking
        // sockets can hold this task for seconds); the retry schedule has tests of its own.
        #expect(client.attemptCount >= 1)
        await client.transport.close()
    }
}
