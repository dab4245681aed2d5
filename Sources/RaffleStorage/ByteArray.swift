/// A growable byte buffer in raw memory: the log's pending and writing buffers. Grows by doubling
/// and never shrinks, so after warm-up appending allocates nothing.
///
/// `@unchecked Sendable`: a ByteArray is only ever reachable from one place at a time. The log keeps
/// two: `pending`, touched only inside the log's mutex, and the writer thread's local `batch`. They
/// trade places with `swap` inside the mutex, so no buffer is ever accessed by two threads at once.
final class ByteArray: @unchecked Sendable {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = max(capacity, 64)
        base = .allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    var isEmpty: Bool { count == 0 }

    /// Makes room for `extra` more bytes.
    @inline(__always)
    func reserve(_ extra: Int) {
        guard count + extra > capacity else { return }
        var newCapacity = capacity * 2
        while newCapacity < count + extra { newCapacity *= 2 }
        let newBase = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        newBase.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    /// Appends `n` bytes written by `body` into uninitialised memory it is given.
    @inline(__always)
    func append(_ n: Int, _ body: (UnsafeMutableRawPointer) -> Void) {
        reserve(n)
        body(base + count)
        count += n
    }

    func appendZeros(_ n: Int) { append(n) { $0.initializeMemory(as: UInt8.self, repeating: 0, count: n) } }

    func setLE32(_ value: UInt32, at offset: Int) {
        (base + offset).storeBytes(of: value.littleEndian, as: UInt32.self)
    }

    func withBytes<R>(from offset: Int, count n: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        body(UnsafeRawBufferPointer(start: base + offset, count: n))
    }

    func removeAll() { count = 0 }
}

/// Writes a record body into the log's pending buffer (little-endian).
public struct RecordWriter {
    let buffer: ByteArray

    @inline(__always) public mutating func u8(_ v: UInt8) { buffer.append(1) { $0.storeBytes(of: v, as: UInt8.self) } }
    @inline(__always) public mutating func u32(_ v: UInt32) { buffer.append(4) { $0.storeBytes(of: v.littleEndian, as: UInt32.self) } }
    @inline(__always) public mutating func u64(_ v: UInt64) { buffer.append(8) { $0.storeBytes(of: v.littleEndian, as: UInt64.self) } }
    @inline(__always) public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func zeros(_ n: Int) { buffer.appendZeros(n) }
    public mutating func bytes(_ b: some Collection<UInt8>) {
        buffer.append(b.count) { p in
            var i = 0
            for byte in b {
                p.storeBytes(of: byte, toByteOffset: i, as: UInt8.self)
                i += 1
            }
        }
    }

    /// Reserves `n` bytes and lets `body` fill them in place (for a batch's entry pairs); `body`
    /// returns how many of them it used.
    public mutating func reserved(_ n: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        buffer.reserve(n)
        let used = body(UnsafeMutableRawBufferPointer(start: buffer.base + buffer.count, count: n))
        buffer.append(min(max(used, 0), n)) { _ in }
    }
}

/// Reads a record body (little-endian), returning nil past its end.
public struct RecordReader {
    /// The record's body, kind byte first.
    public let body: UnsafeRawBufferPointer
    /// Read position.
    public var offset = 0

    public init(body: UnsafeRawBufferPointer) { self.body = body }

    public var remaining: Int { body.count - offset }

    public mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return body[offset]
    }
    public mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { offset += 4 }
        return UInt32(littleEndian: body.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    public mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        defer { offset += 8 }
        return UInt64(littleEndian: body.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
    public mutating func i64() -> Int64? { u64().map { Int64(bitPattern: $0) } }
    public mutating func skip(_ n: Int) -> Bool {
        guard remaining >= n else { return false }
        offset += n
        return true
    }
    /// The next `n` bytes, or nil (and nothing read) when fewer remain.
    public mutating func bytes(_ n: Int) -> UnsafeRawBufferPointer? {
        guard n >= 0, remaining >= n else { return nil }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: body[offset..<(offset + n)])
    }
    /// The rest of the body.
    public mutating func rest() -> UnsafeRawBufferPointer {
        defer { offset = body.count }
        return UnsafeRawBufferPointer(rebasing: body[offset...])
    }
}
