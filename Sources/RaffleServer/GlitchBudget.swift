/// The denial-of-service budget of one HTTP/2 connection: a token bucket of "glitches" — empty DATA
/// or HEADERS frames, invalid frames, streams reset by the header limits — `burst` at once and
/// `perSecond` after (as nghttp2's later releases count them). Pure: time is passed in, so the tests
/// drive it with a clock of their own.
struct GlitchBudget {
    let burst: Int
    let perSecond: Int
    private(set) var tokens: Int
    private var refilledAt: UInt64

    /// A full budget at `now` (monotonic nanoseconds).
    init(burst: Int, perSecond: Int, now: UInt64) {
        self.burst = max(burst, 0)
        self.perSecond = max(perSecond, 0)
        tokens = self.burst
        refilledAt = now
    }

    /// Counts `cost` glitches at `now`; false once the budget is spent (answer GOAWAY(ENHANCE_YOUR_CALM)).
    mutating func spend(now: UInt64, cost: Int = 1) -> Bool {
        if perSecond > 0 {
            // Whole milliseconds since the last refill, capped so the product cannot overflow.
            let elapsedMs = Int(min((now &- refilledAt) / 1_000_000, UInt64(Int.max / 1_000_000)))
            let refill = elapsedMs / 1_000 * perSecond + elapsedMs % 1_000 * perSecond / 1_000
            if refill > 0 {
                tokens = min(burst, tokens + min(refill, burst))
                refilledAt = now
            }
        }
        tokens -= cost
        return tokens >= 0
    }
}
