internal import CNGHTTP2

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The C library's `free` (inside `SessionAllocator` the name is its own method).
@inline(__always)
private func systemFree(_ block: UnsafeMutableRawPointer) { free(block) }

/// nghttp2's memory for one session: blocks of up to 2 KiB come from free lists, one per 64-byte
/// size class, and go back to them when nghttp2 frees them; larger ones go straight to malloc.
///
/// A purpose-built allocator because a measurement asked for it: nghttp2 makes ~5 allocations per
/// request (the stream, its outbound items, the copied header list) and frees them as the stream
/// closes. With hundreds of streams in flight they come and go in waves wider than glibc's
/// per-thread cache (7 blocks per size), so most went through `_int_malloc` / `_int_free`: ~7 % of
/// the server's durable single-entry path (perf; Bench/RESULTS.md, issue #15).
///
/// Bounded: at most `limit` bytes of freed blocks are kept for reuse (the rest goes back to malloc),
/// and everything kept is released with the session. Not thread-safe, like the session: nghttp2
/// calls it only from inside the owning session's calls, on its event loop.
final class SessionAllocator {
    /// Size classes are multiples of this many bytes.
    static let granule = 64
    /// Number of size classes (blocks up to `granule * classes` bytes are pooled).
    static let classes = 32
    /// Bytes in front of every block: its class (or -1) and its capacity. Keeps 16-byte alignment.
    static let headerBytes = 16

    /// The most bytes kept in the free lists.
    let limit: Int
    /// Bytes now in the free lists.
    private(set) var cachedBytes = 0
    /// Free-list heads, one per class; each free block's payload starts with the next pointer.
    private let heads: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Blocks handed out that came from a free list, and from malloc (for tests and metrics).
    private(set) var reused = 0
    private(set) var fresh = 0

    /// - Parameter limit: the most bytes of freed blocks kept for reuse; 0 turns the pool off:
    ///   every block is malloc'd at its exact size (so AddressSanitizer, in the fuzz builds, sees
    ///   nghttp2's real bounds rather than a size class's slack).
    init(limit: Int) {
        self.limit = max(limit, 0)
        heads = .allocate(capacity: Self.classes)
        heads.initialize(repeating: nil, count: Self.classes)
    }

    deinit {
        trim()
        heads.deallocate()
    }

    /// Hands every kept block back to malloc (a connection with no open stream need not hold them).
    func trim() {
        guard cachedBytes > 0 else { return }
        for c in 0..<Self.classes {
            var block = heads[c]
            while let b = block {
                block = (b + Self.headerBytes).load(as: UnsafeMutableRawPointer?.self)
                systemFree(b)
            }
            heads[c] = nil
        }
        cachedBytes = 0
    }

    /// The `nghttp2_mem` that routes a session's allocations here. nghttp2 copies it into the
    /// session; the allocator must outlive the session (the session object owns both).
    var mem: nghttp2_mem {
        nghttp2_mem(
            mem_user_data: Unmanaged.passUnretained(self).toOpaque(),
            malloc: { size, user in SessionAllocator.with(user) { $0.allocate(size) } },
            free: { pointer, user in SessionAllocator.with(user) { $0.free(pointer) } },
            calloc: { count, size, user in SessionAllocator.with(user) { $0.allocateZeroed(count, size) } },
            realloc: { pointer, size, user in SessionAllocator.with(user) { $0.reallocate(pointer, size) } })
    }

    /// Runs `body` with the allocator behind `user` without a retain: the session that owns it is
    /// inside an nghttp2 call, so the allocator is alive for the call.
    @inline(__always)
    private static func with<R>(_ user: UnsafeMutableRawPointer?, _ body: (SessionAllocator) -> R) -> R {
        Unmanaged<SessionAllocator>.fromOpaque(user!)._withUnsafeGuaranteedRef(body)
    }

    /// A block of at least `size` bytes (nil if malloc fails).
    func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        let c = limit == 0 ? Self.classes : size <= 0 ? 0 : (size - 1) / Self.granule
        if c < Self.classes, let block = heads[c] {
            heads[c] = (block + Self.headerBytes).load(as: UnsafeMutableRawPointer?.self)
            cachedBytes -= (c + 1) * Self.granule
            reused += 1
            return block + Self.headerBytes
        }
        let pooled = c < Self.classes
        let capacity = pooled ? (c + 1) * Self.granule : max(size, 0)
        guard let block = malloc(Self.headerBytes + capacity) else { return nil }
        block.storeBytes(of: pooled ? c : -1, as: Int.self)
        block.storeBytes(of: capacity, toByteOffset: 8, as: Int.self)
        fresh += 1
        return block + Self.headerBytes
    }

    /// Takes back a block from `allocate` (nil is ignored).
    func free(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        let block = pointer - Self.headerBytes
        let c = block.load(as: Int.self)
        let bytes = (c + 1) * Self.granule
        if c >= 0 && cachedBytes + bytes <= limit {
            pointer.storeBytes(of: heads[c], as: UnsafeMutableRawPointer?.self)
            heads[c] = block
            cachedBytes += bytes
        } else {
            systemFree(block)
        }
    }

    /// `count * size` zeroed bytes (nil on overflow or when malloc fails).
    func allocateZeroed(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
        let (total, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow, total >= 0, let pointer = allocate(total) else { return nil }
        memset(pointer, 0, total)
        return pointer
    }

    /// `realloc`'s contract: the block grown or shrunk to `size`, contents kept up to the smaller size.
    func reallocate(_ pointer: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
        guard let pointer else { return allocate(size) }
        if size == 0 {
            free(pointer)
            return nil
        }
        let capacity = (pointer - Self.headerBytes).load(fromByteOffset: 8, as: Int.self)
        if size <= capacity { return pointer }
        guard let grown = allocate(size) else { return nil }
        grown.copyMemory(from: pointer, byteCount: capacity)
        free(pointer)
        return grown
    }
}
