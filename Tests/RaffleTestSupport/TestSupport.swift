import Foundation
public import RaffleWire

/// A fresh directory under the system temp dir, removed when the value is released.
public final class TempDir: Sendable {
    /// Its path.
    public let path: String

    public init() {
        path = NSTemporaryDirectory() + "raffled-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The names of the files in it, sorted.
    public func files() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}

/// Encodes an entry-batch frame.
public func batchFrame(raffle: UInt64, users: some Sequence<UInt64>, requestID: UInt64, tickets: UInt32 = 1) -> [UInt8] {
    let entries = users.map { Entry(userID: $0, tickets: tickets) }
    return (try? FrameEncoder.encode(Frame(requestID: requestID, body: .entryBatch(raffleID: raffle, entries: entries)))) ?? []
}

/// Decodes every frame in `bytes` (as a client receives them).
public func decodeFrames(_ bytes: [UInt8]) throws -> [Frame] {
    try FrameDecoder(receiver: .client).decodeAll(bytes)
}

/// A seeded, reproducible generator (SplitMix64).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The admin key the test servers are configured with.
public let testAdminKey = "raffled-test-admin-key-0123456789"

/// The `authorization` header field that carries `testAdminKey`.
public let testAdminHeader = ("authorization", "Bearer " + testAdminKey)
