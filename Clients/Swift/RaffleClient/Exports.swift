// One `import RaffleClient` is enough: the types its API speaks — `Entry`, `EntryOutcome`,
// `ProtocolErrorCode`, `ThrottleReason` (the wire protocol) and `RaffleInfo`, `DrawResult`, `Draw`
// (raffles and the verifiable draw) — come with it.
@_exported public import RaffleCore
@_exported public import RaffleWire
