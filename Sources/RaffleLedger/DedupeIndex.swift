internal import CRafflePrefetch
#if canImport(Glibc)
import Glibc
#endif

/// The set of user ids that hold an entry in one raffle: "one entry per user per raffle".
///
/// Purpose-built rather than `Set<UInt64>`: measured on this project's hardware (FIELD-NOTES), the
/// standard set spent ~150 instructions per insert hashing (SipHash) and was ~60 % of a 1,000-entry
/// request; this open-addressing table with a multiplicative mix takes ~40. It also stores only the
/// 8-byte key per slot (user id 0 is invalid on the wire, so 0 marks an empty slot), which is how the
/// index stays within 24 bytes per stored entry: it doubles at load 3/4, so it holds between 10.7
/// (load 3/4) and 21.3 (load 3/8, just after doubling) bytes per entry. (At load 7/8 linear probing
/// averaged ~30 probes per insert and took half the server's time in a profile.)
///
/// A per-process random seed is mixed into the hash so that chosen user ids cannot force long probe
/// chains. Not thread-safe: the ledger guards it.
public final class DedupeIndex {
    private var slots: UnsafeMutablePointer<UInt64>
    private var mask: Int
    private var shift: UInt64
    /// Number of user ids stored.
    public private(set) var count: Int
    private let seed: UInt64

    /// Creates an empty index with room for at least `capacity` ids before it grows.
    public init(capacity: Int = 1_024, seed: UInt64 = UInt64.random(in: 1...UInt64.max)) {
        var size = 16
        while size * 3 / 4 < capacity { size <<= 1 }
        slots = Self.allocateTable(size)
        mask = size - 1
        shift = UInt64(64 - size.trailingZeroBitCount)
        count = 0
        self.seed = seed
    }

    deinit { Self.deallocateTable(slots, mask + 1) }

    /// Tables of at least this many bytes are mapped directly and asked for transparent huge pages.
    public static let hugeTableBytes = 2 << 20

    /// A zeroed table of `size` slots. A large one is an anonymous mapping (zero pages the kernel
    /// hands out as they are first touched, so a table sized for a big drop costs memory only as it
    /// fills, unless `prefault` asks for all of it at once; before, the whole table was zero-filled
    /// at creation) with `MADV_HUGEPAGE`: every insert
    /// lands on a random slot, and with 4 KiB pages a 1 GiB table misses the TLB on nearly every one.
    /// Measured (Bench/RESULTS.md, issue #15 item 3, point 6): the huge pages are used, but on this VM
    /// the insert loop's share of a bulk profile barely moved (44 % → 41 %): the cache miss is the cost.
    private static func allocateTable(_ size: Int) -> UnsafeMutablePointer<UInt64> {
        let bytes = size * MemoryLayout<UInt64>.stride
        #if canImport(Glibc)
        if bytes >= hugeTableBytes {
            let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            // Out of address space: what `allocate` does then too (and `deallocateTable` must know
            // a large table is always a mapping).
            guard let mapped, mapped != MAP_FAILED else { fatalError("cannot map \(bytes) bytes for a dedupe index: errno \(errno)") }
            _ = madvise(mapped, bytes, MADV_HUGEPAGE)
            return mapped.bindMemory(to: UInt64.self, capacity: size)
        }
        #endif
        let table = UnsafeMutablePointer<UInt64>.allocate(capacity: size)
        table.initialize(repeating: 0, count: size)
        return table
    }

    private static func deallocateTable(_ table: UnsafeMutablePointer<UInt64>, _ size: Int) {
        let bytes = size * MemoryLayout<UInt64>.stride
        #if canImport(Glibc)
        if bytes >= hugeTableBytes {
            munmap(table, bytes)
            return
        }
        #endif
        table.deallocate()
    }

    /// Backs the whole table with memory now rather than as inserts first touch it, without
    /// changing its contents (`MADV_POPULATE_WRITE`), and returns whether it is all backed (a table
    /// under `hugeTableBytes` always is: it was zero-filled when made).
    ///
    /// For a raffle sized for its expected entries, at creation: the first touch of a page is a
    /// fault that zero-fills it, and on a VM whose guest memory is not yet backed by the host that
    /// cost ~2 ms per MiB (measured on this project's VM, Bench/RESULTS.md issue #15, "The index's
    /// memory committed when a sized raffle is created"): 22 % of the server's CPU during an 8M-entry bulk ingest into a
    /// 128 MiB table, paid mid-spike. Not thread-safe, like everything here: the caller owns the
    /// index (the ledger calls it before the raffle is published, outside its lock).
    @discardableResult
    public func prefault() -> Bool {
        let bytes = memoryBytes
        guard bytes >= Self.hugeTableBytes else { return true }
        #if canImport(Glibc)
        return madvise(slots, bytes, 23 /* MADV_POPULATE_WRITE, Linux 5.14 */) == 0
        #else
        return false
        #endif
    }

    /// Bytes of the table backed by memory now (`mincore`); the whole table for one under
    /// `hugeTableBytes`.
    public var residentBytes: Int {
        let bytes = memoryBytes
        guard bytes >= Self.hugeTableBytes else { return bytes }
        #if canImport(Glibc)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var vector = [UInt8](repeating: 0, count: (bytes + page - 1) / page)
        guard mincore(slots, bytes, &vector) == 0 else { return 0 }
        return vector.reduce(0) { $0 + Int($1 & 1) } * page
        #else
        return bytes
        #endif
    }

    /// Number of slots (a power of two).
    public var capacity: Int { mask + 1 }

    /// Bytes of memory the table holds.
    public var memoryBytes: Int { capacity * MemoryLayout<UInt64>.stride }

    @inline(__always)
    private func home(_ key: UInt64) -> Int {
        // Fibonacci hashing: the top bits of key × 2^64/φ, after mixing in the seed.
        var h = (key ^ seed) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        return Int(truncatingIfNeeded: (h &* 0xBF58_476D_1CE4_E5B9) >> shift)
    }

    /// Inserts `userID` (non-zero). Returns true if it was not there before.
    @inline(__always)
    public func insert(_ userID: UInt64) -> Bool {
        guard userID != 0 else { return false }
        if (count + 1) * 4 > capacity * 3 { grow() }
        // Locals, not stored properties, inside the probe loop: no exclusivity check per probe.
        let table = slots
        let m = mask
        var i = home(userID)
        while true {
            let slot = table[i]
            if slot == userID { return false }
            if slot == 0 {
                table[i] = userID
                count += 1
                return true
            }
            i = (i + 1) & m
        }
    }

    /// Inserts `keys` in one go, with the same outcome as inserting them one by one in order, and
    /// returns the positions (ascending) of those that were not new: already stored, met earlier in
    /// `keys`, or 0.
    ///
    /// Purpose-built for start-up (a checkpoint's entry list, the log replayed after it), where one
    /// insert at a time is bound by a cache miss per id (a profile of a 10M-entry restart: the two
    /// insert loops were ~50% of it, Bench/RESULTS.md "Bounded restart"). Here the table is sized
    /// once, the ids are grouped by the 1/4096th of the table they land in (a stable counting sort,
    /// so the first of two equal ids still comes first), and inserted group after group: each group
    /// touches one small region of the table, walked front to back.
    public func insertAll(_ keys: UnsafeBufferPointer<UInt64>) -> [Int] {
        let n = keys.count
        guard n > 0 else { return [] }
        guard n <= Int(UInt32.max) else { return keys.indices.filter { !insert(keys[$0]) } }
        if count == 0 {
            // Empty: allocate the final size at once rather than double its way there.
            var size = capacity
            while (n * 4 > size * 3) { size <<= 1 }
            if size != capacity {
                Self.deallocateTable(slots, capacity)
                slots = Self.allocateTable(size)
                mask = size - 1
                shift = UInt64(64 - size.trailingZeroBitCount)
            }
        }
        while (count + n) * 4 > capacity * 3 { grow() }
        let tableBits = capacity.trailingZeroBitCount
        let bucketBits = min(12, tableBits)
        let buckets = 1 << bucketBits
        let down = tableBits - bucketBits
        let starts = UnsafeMutableBufferPointer<Int>.allocate(capacity: buckets + 1)
        let sortedKeys = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: n)
        let sortedAt = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: n)
        defer {
            starts.deallocate()
            sortedKeys.deallocate()
            sortedAt.deallocate()
        }
        starts.initialize(repeating: 0)
        for key in keys { starts[(home(key) >> down) + 1] += 1 }
        for b in 0..<buckets { starts[b + 1] += starts[b] }
        for (i, key) in keys.enumerated() {
            let b = home(key) >> down
            let at = starts[b]
            sortedKeys[at] = key
            sortedAt[at] = UInt32(truncatingIfNeeded: i)
            starts[b] = at + 1
        }
        var notNew: [Int] = []
        let table = slots
        let m = mask
        let ahead = 16
        for j in 0..<min(ahead, n) { raffle_prefetch_write(table + home(sortedKeys[j])) }
        for j in 0..<n {
            if j + ahead < n { raffle_prefetch_write(table + home(sortedKeys[j + ahead])) }
            let key = sortedKeys[j]
            var inserted = false
            if key != 0 {
                var i = home(key)
                while true {
                    let slot = table[i]
                    if slot == key { break }
                    if slot == 0 {
                        table[i] = key
                        count += 1
                        inserted = true
                        break
                    }
                    i = (i + 1) & m
                }
            }
            if !inserted { notNew.append(Int(sortedAt[j])) }
        }
        return notNew.sorted()
    }

    /// Starts loading the slot `userID` would go to, so a later `insert` of it does not wait for
    /// memory. Call it a few entries ahead in a batch.
    @inline(__always)
    public func prefetch(_ userID: UInt64) {
        raffle_prefetch_write(slots + home(userID))
    }

    /// Whether `userID` is stored.
    public func contains(_ userID: UInt64) -> Bool {
        guard userID != 0 else { return false }
        let table = slots
        let m = mask
        var i = home(userID)
        while true {
            let slot = table[i]
            if slot == userID { return true }
            if slot == 0 { return false }
            i = (i + 1) & m
        }
    }

    private func grow() {
        let oldSlots = slots
        let oldCapacity = capacity
        let size = oldCapacity << 1
        slots = Self.allocateTable(size)
        mask = size - 1
        shift -= 1
        for j in 0..<oldCapacity where oldSlots[j] != 0 {
            let key = oldSlots[j]
            var i = home(key)
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = key
        }
        Self.deallocateTable(oldSlots, oldCapacity)
    }
}
