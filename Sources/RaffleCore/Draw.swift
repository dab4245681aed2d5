import Crypto
import Foundation

/// The verifiable draw. Anyone holding an export of the entries and the revealed seed can recompute
/// the winners with `Draw.winners(entries:seed:count:)` (or `raffle verify`).
///
/// 1. **Commitment.** At creation the server picks a random 32-byte seed and publishes
///    `commitment = SHA-256(seed)`; the seed stays secret until the draw.
/// 2. **Canonical entry list.** Entries sorted by user id ascending, each encoded as the user id
///    (u64, little-endian) followed by tickets (u32, little-endian); `entryListHash = SHA-256` of the
///    concatenation. Publishing it fixes the entries before anyone but the server knows the outcome.
/// 3. **Random stream.** Block *i* (i = 0, 1, …) is `SHA-256(seed ‖ entryListHash ‖ u64le(i))`; each
///    block yields four u64 values (little-endian, in order).
/// 4. **Winners, weighted by tickets, without replacement.** With `T` tickets still in play, take the
///    next u64 `r`; reject it while `r < 2^64 mod T` (this removes modulo bias), then the winning ticket is
///    `r mod T` counted along the canonical list; that entry wins and all its tickets leave play. Repeat
///    until `count` winners or no entries are left.
public enum Draw {
    /// A raffle entry for the draw.
    public struct Entry: Hashable, Sendable {
        public var userID: UInt64
        public var tickets: UInt32
        public init(userID: UInt64, tickets: UInt32) {
            self.userID = userID
            self.tickets = tickets
        }
    }

    /// A new random 32-byte seed.
    public static func makeSeed() -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    /// `SHA-256(seed)` as lower-case hex.
    public static func commitment(seed: [UInt8]) -> String { hex(SHA256.hash(data: seed)) }

    /// Sorts `entries` into canonical order (by user id).
    public static func canonical(_ entries: [Entry]) -> [Entry] { entries.sorted { $0.userID < $1.userID } }

    /// SHA-256 (hex) of the canonical list; `entries` must already be canonical.
    public static func entryListHash(canonical entries: [Entry]) -> String {
        var hasher = SHA256()
        var chunk = [UInt8]()
        chunk.reserveCapacity(12 * 4_096)
        for entry in entries {
            withUnsafeBytes(of: entry.userID.littleEndian) { chunk.append(contentsOf: $0) }
            withUnsafeBytes(of: entry.tickets.littleEndian) { chunk.append(contentsOf: $0) }
            if chunk.count >= 12 * 4_096 {
                hasher.update(data: chunk)
                chunk.removeAll(keepingCapacity: true)
            }
        }
        hasher.update(data: chunk)
        return hex(hasher.finalize())
    }

    /// Draws `count` winners from `entries` (any order; canonicalised here) with `seed`. Returns the
    /// entry-list hash and the winners in draw order.
    public static func winners(entries: [Entry], seed: [UInt8], count: Int) -> (entryListHash: String, winners: [UInt64]) {
        let list = canonical(entries).filter { $0.tickets > 0 }
        let listHash = entryListHash(canonical: list)
        var stream = RandomStream(seed: seed, listHash: bytes(hex: listHash) ?? [])
        var tree = FenwickTree(list.map { UInt64($0.tickets) })
        var remaining = list.reduce(UInt64(0)) { $0 + UInt64($1.tickets) }
        var winners: [UInt64] = []
        while winners.count < count, remaining > 0 {
            let threshold = (0 &- remaining) % remaining  // 2^64 mod remaining
            var r = stream.next()
            while r < threshold { r = stream.next() }
            let index = tree.find(r % remaining)
            winners.append(list[index].userID)
            let tickets = UInt64(list[index].tickets)
            tree.subtract(tickets, at: index)
            remaining -= tickets
        }
        return (listHash, winners)
    }

    /// Lower-case hex of `digest`.
    public static func hex(_ digest: some Sequence<UInt8>) -> String {
        digest.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// Bytes from hex, or nil if `text` is not even-length hex.
    public static func bytes(hex text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count.isMultiple(of: 2) else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        case 0x41...0x46: c - 0x41 + 10
        default: nil
        }
    }
}

/// Step 3 of the draw: u64 values from SHA-256 in counter mode.
struct RandomStream {
    let prefix: [UInt8]
    var counter: UInt64 = 0
    var buffer: [UInt64] = []

    init(seed: [UInt8], listHash: [UInt8]) { prefix = seed + listHash }

    mutating func next() -> UInt64 {
        if buffer.isEmpty {
            var input = prefix
            withUnsafeBytes(of: counter.littleEndian) { input.append(contentsOf: $0) }
            counter += 1
            let digest = Array(SHA256.hash(data: input))
            // Four values per block, taken in order (reversed here so popLast yields the first).
            buffer = (0..<4).reversed().map { k in
                digest[(k * 8)..<(k * 8 + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            }
        }
        return buffer.removeLast()
    }
}

/// Prefix sums of ticket counts: finds the entry holding the k-th ticket in O(log n).
struct FenwickTree {
    var tree: [UInt64]

    init(_ weights: [UInt64]) {
        tree = [0] + weights
        for i in 1..<max(tree.count, 1) {
            let parent = i + (i & -i)
            if parent < tree.count { tree[parent] += tree[i] }
        }
    }

    mutating func subtract(_ value: UInt64, at index: Int) {
        var i = index + 1
        while i < tree.count {
            tree[i] -= value
            i += i & -i
        }
    }

    /// The index of the entry holding ticket `k` (0-based) in canonical order.
    func find(_ k: UInt64) -> Int {
        var position = 0
        var rest = k
        var step = 1
        while step * 2 < tree.count { step *= 2 }
        while step > 0 {
            let next = position + step
            if next < tree.count && tree[next] <= rest {
                position = next
                rest -= tree[next]
            }
            step /= 2
        }
        return position  // 0-based index of the entry (position + 1 in tree terms)
    }
}
