import Foundation
import NIOCore
import RaffleAdmission
import RaffleCore
import RaffleHTTP2
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("Throttling end to end", .timeLimit(.minutes(1)))
struct ThrottlingTests {
    static let key = "partner-a-secret-key-0123456789"

    func start() async throws -> ServerFixture {
        try await ServerFixture.start { config in
            config.admission.global = RateLimit(ratePerSecond: 1_000_000, burst: 2_000_000)
            // Slow enough that a busy machine's delays between requests barely refill it.
            config.admission.anonymous = RateLimit(ratePerSecond: 1, burst: 20)
            config.admission.clients = [.init(name: "partner-a", key: Self.key, rate: 100_000, burst: 200_000)]
        }
    }

    @Test func anonymousConnectionsAreThrottledWithExactHints() async throws {
        let f = try await start()
        let raffle = try await f.createRaffle()
        let started = ContinuousClock.now
        let (first, frames1, _) = try await f.post(batchFrame(raffle: raffle, users: 1...19, requestID: 1))  // cost 20: the burst
        #expect(first == 200 && frames1.first?.outcomes?.count == 19)
        let (status, frames, response) = try await f.post(batchFrame(raffle: raffle, users: 100...104, requestID: 2))  // cost 6
        #expect(status == 429)
        guard case .throttled(let ms, let reason)? = frames.first?.body else {
            Issue.record("expected a throttled frame, got \(frames)")
            return
        }
        #expect(reason == .rateLimited)
        // The bucket refilled for at most the time between the two requests (a loaded machine may
        // take seconds): the hint is 6 s less that, never more than 6 s.
        let between = started.duration(to: .now)
        let refilledAtMost = Int(between.components.seconds) * 1_000 + Int(between.components.attoseconds / 1_000_000_000_000_000) + 1
        #expect(Int(ms) >= 6_000 - refilledAtMost && ms <= 6_000, "6 tokens at 1/s, less the time since the burst (\(between)): \(ms) ms")
        let seconds = (Int(ms) + 999) / 1_000
        #expect(response.header("retry-after") == "\(seconds)", "whole seconds, rounded up")
        #expect(response.header("ratelimit-policy") == #""anonymous";q=20;w=20"#)
        #expect(response.header("ratelimit")?.hasSuffix(";t=\(seconds)") == true)
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 19, "nothing of a throttled batch is stored")
        let metrics = String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
        #expect(metrics.contains(#"raffled_throttled_total{reason="rate_limited"} 1"#))
        await f.stop()
    }

    @Test func anApiKeyGetsItsClientsLimitsAndAWrongKeyIsAnonymous() async throws {
        let f = try await start()
        let raffle = try await f.createRaffle()
        let body = batchFrame(raffle: raffle, users: 1...1_000, requestID: 1)
        let keyed = try await f.client.request(
            method: "POST", path: Wire.entriesPath, headers: [("content-type", Wire.contentType), ("authorization", "Bearer " + Self.key)], body: body)
        #expect(keyed.status == 200)
        let wrong = try await f.client.request(
            method: "POST", path: Wire.entriesPath, headers: [("content-type", Wire.contentType), ("authorization", "Bearer nope-nope-nope-nope")],
            body: batchFrame(raffle: raffle, users: 2_001...2_100, requestID: 2))
        #expect(wrong.status == 413, "anonymous burst is 20: a 100-entry batch can never pass")
        let frames = try decodeFrames(Array(buffer: wrong.body))
        #expect(frames.first?.errorCode == .batchExceedsBurst)
        guard case .error(_, let message)? = frames.first?.body else { return }
        #expect(message.contains("anonymous") && message.contains("split"))
        #expect(!message.contains("nope"), "keys are never echoed")
        await f.stop()
    }
}
