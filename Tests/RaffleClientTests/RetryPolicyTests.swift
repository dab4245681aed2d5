import Logging
import RaffleAdmission
@testable import RaffleClient
import RaffleClientHTTP2
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("Retry policy: retry-after floor and the budget", .timeLimit(.minutes(1)))
struct RetryPolicyTests {
    @Test func retryAfterIsAFloorWithOnlyALittleJitterOnTop() {
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.retryAfterJitterShare = 0.1
        config.maxRetryAfterJitter = .milliseconds(100)
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: 1), configuration: config)
        for ms: UInt32 in [0, 1, 40, 250, 1_000, 5_000, 60_000] {
            var seen = Set<Duration>()
            for _ in 0..<200 {
                let d = client.retryAfterDelay(ms)
                let floor = Duration.milliseconds(Int64(ms))
                let most = floor + min(floor * 0.1, .milliseconds(100))
                #expect(d >= floor && d <= most, "\(ms) ms → \(d)")
                seen.insert(d)
            }
            if ms >= 250 { #expect(seen.count > 10, "jitter spreads clients inside the slot (\(ms) ms)") }
        }
    }

    @Test func anEmptyBudgetStopsRetriesAfterTheFirstFailure() async throws {
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.retryRatio = 0
        config.minimumRetriesPerSecond = 0
        config.deadline = .seconds(10)
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: 1), configuration: config)
        do {
            _ = try await client.submit([Entry(userID: 1)], to: 1)
            Issue.record("nothing listens on port 1")
        } catch let error as RaffleClientError {
            #expect(error.kind == .retryBudgetExhausted, "\(error)")
            #expect((error.underlying as? RaffleClientError)?.message.contains("cannot connect") == true, "names the last failure: \(error)")
        }
        #expect(client.attemptCount == 1, "no retry without budget")
    }

    @Test func throttledRetriesFollowTheServerAndDoNotSpendTheBudget() async throws {
        let (s, dir) = try await TestServer.start { $0.admission.anonymous = RateLimit(ratePerSecond: 20, burst: 6) }
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.retryRatio = 0
        config.minimumRetriesPerSecond = 0
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: config)
        let raffle = try await client.createRaffle(title: "Paced", duration: .seconds(600))
        // Eight batches of cost 3 at once against a burst of 6: most are throttled and come back later.
        let results = try await withThrowingTaskGroup(of: [EntryOutcome].self) { group in
            for k in UInt64(0)..<8 { group.addTask { try await client.submit([Entry(userID: k * 2 + 1), Entry(userID: k * 2 + 2)], to: raffle.id) } }
            return try await group.reduce(into: [[EntryOutcome]]()) { $0.append($1) }
        }
        #expect(results.count == 8 && results.allSatisfy { $0 == [.accepted, .accepted] })
        #expect(client.attemptCount > 8, "some batches were throttled and went back later (\(client.attemptCount) attempts)")
        #expect(try await client.raffle(raffle.id).entries == 16)
        await client.transport.close()
        await s.shutdown()
        _ = dir
    }
}
