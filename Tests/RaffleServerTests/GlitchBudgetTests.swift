@testable import RaffleServer
import Testing

@Suite("The HTTP/2 glitch budget, with a clock the test moves")
struct GlitchBudgetTests {
    static let ms: UInt64 = 1_000_000

    /// Spends one glitch at each of `times` (ms) and returns the answers.
    func spend(_ budget: inout GlitchBudget, at times: [UInt64]) -> [Bool] {
        times.map { budget.spend(now: $0 * Self.ms) }
    }

    @Test func aCostlyGlitchSpendsSeveral() {
        var budget = GlitchBudget(burst: 100, perSecond: 0, now: 0)
        var fitted = 0
        for _ in 0..<10 where budget.spend(now: 0, cost: 10) { fitted += 1 }
        #expect(fitted == 10, "ten PINGs of cost 10 fit a burst of 100")
        let eleventh = budget.spend(now: 0, cost: 10)
        #expect(!eleventh)
    }

    @Test func aBurstThenNothingWithoutARate() {
        var budget = GlitchBudget(burst: 3, perSecond: 0, now: 0)
        let answers = spend(&budget, at: [0, 0, 0, 1_000_000])
        #expect(answers == [true, true, true, false], "no refill without a rate, however long")
    }

    @Test func theRateRefillsWholeTokensOnly() {
        var budget = GlitchBudget(burst: 3, perSecond: 10, now: 0)
        // The burst; half a token after 50 ms (still spent, and now 1 overdrawn); two more tokens after
        // 250 ms pay the overdraft and one glitch; then spent again.
        let answers = spend(&budget, at: [0, 0, 0, 50, 250, 250])
        #expect(answers == [true, true, true, false, true, false])
    }

    @Test func refillNeverExceedsTheBurstNorOverflows() {
        var budget = GlitchBudget(burst: 2, perSecond: 1_000, now: 0)
        let far = UInt64.max / 2 / Self.ms
        let answers = spend(&budget, at: [0, far, far, far])
        #expect(answers == [true, true, true, false], "a very long quiet time fills the bucket to its burst, 2, without overflow")
    }
}
