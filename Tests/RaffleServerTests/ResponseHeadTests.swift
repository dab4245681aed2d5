import RaffleAdmission
import RaffleLedger
@testable import RaffleServer
import Testing

/// The response head builder alone: the fields a stream's state yields, as both HTTP adapters send them.
@Suite("Response head fields")
struct ResponseHeadTests {
    func fields(_ stream: StreamState, durability: LedgerDurability = .fsync) -> [String] {
        var out: [String] = []
        stream.responseFields(durability: durability) { out.append("\($0): \($1)") }
        return out
    }

    @Test func anAckCarriesOnlyItsContentType() {
        #expect(fields(StreamState()) == ["content-type: application/vnd.raffled.frames"])
    }

    @Test func aThrottledAnswerCarriesRetryAfterAndTheRateLimitPair() {
        var stream = StreamState()
        stream.status = 429
        stream.retryAfterMilliseconds = 2_001
        stream.throttlePolicy = ("anonymous", RateLimit(ratePerSecond: 4, burst: 10), 3)
        #expect(
            fields(stream) == [
                "content-type: application/vnd.raffled.frames", "retry-after: 3", #"ratelimit-policy: "anonymous";q=10;w=3"#,
                #"ratelimit: "anonymous";r=3;t=3"#,
            ])
    }

    @Test func unavailableEntriesGetARetryFloorButAdminErrorsDoNot() {
        var stream = StreamState()
        stream.status = 503
        #expect(fields(stream).contains("retry-after: 1"))
        stream.bodyKind = .json
        #expect(fields(stream) == ["content-type: application/json"])
    }

    @Test func unauthorizedNamesTheSchemeAndNonDurableAcksSaySo() {
        var stream = StreamState()
        stream.status = 401
        stream.bodyKind = .json
        #expect(fields(stream).contains(#"www-authenticate: Bearer realm="raffled-admin""#))
        #expect(!fields(stream, durability: .none).contains("raffled-durability: none"), "only frame answers carry it")
        #expect(fields(StreamState(), durability: .none).last == "raffled-durability: none")
    }
}
