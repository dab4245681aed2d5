import RaffleLedger

// The response head of a stream or exchange, from its state: pure, no I/O, the same fields over
// HTTP/2 and HTTP/1.1 (PROTOCOL.md §11). The status comes from `StreamState.status` (the first
// reply's); the adapters write it as `:status` or the status line.

extension StreamState {
    /// The response header fields after the status, in order: `content-type`; `retry-after` and the
    /// IETF RateLimit pair on a throttled answer; `retry-after: 1` on an UNAVAILABLE one (a floor for
    /// the client's backoff); `www-authenticate` on a 401; `raffled-durability: none` when
    /// acknowledgements are not durable. Each transport adds its own framing fields
    /// (HTTP/1.1: `content-length`, `connection`).
    func responseFields(durability: LedgerDurability, _ add: (StaticString, String) -> Void) {
        add("content-type", bodyKind.contentType)
        if let ms = retryAfterMilliseconds {
            let seconds = Int((UInt64(ms) + 999) / 1_000)
            add("retry-after", String(seconds))
            if let policy = throttlePolicy {
                // IETF httpapi RateLimit headers: the policy (quota, window) and its current state.
                let window = max((policy.limit.burst + policy.limit.ratePerSecond - 1) / policy.limit.ratePerSecond, 1)
                add("ratelimit-policy", "\"\(policy.name)\";q=\(policy.limit.burst);w=\(window)")
                add("ratelimit", "\"\(policy.name)\";r=\(policy.remaining);t=\(seconds)")
            }
        }
        // UNAVAILABLE (storage failed, a shared database unreachable).
        if status == 503 && retryAfterMilliseconds == nil && bodyKind == .frames { add("retry-after", "1") }
        if status == 401 { add("www-authenticate", "Bearer realm=\"raffled-admin\"") }
        if durability == .none && bodyKind == .frames { add("raffled-durability", "none") }
    }
}
