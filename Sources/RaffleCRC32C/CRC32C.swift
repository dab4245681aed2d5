internal import CRaffleCRC32C

/// CRC32C (Castagnoli), the frame checksum. Uses the CPU's crc32 instruction when present.
public enum CRC32C {
    /// The CRC32C of `bytes`, continuing from `crc` (0 to start): `extend(extend(0, a), b)` is the
    /// checksum of `a` followed by `b`.
    @inline(__always)
    public static func extend(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return raffle_crc32c_extend(crc, base, bytes.count)
    }

    /// The CRC32C of `bytes`.
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        let array = Array(bytes)
        return array.withUnsafeBytes { extend(0, $0) }
    }

    /// The portable (table) implementation, for cross-checking the hardware path.
    public static func extendPortable(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return raffle_crc32c_extend_portable(crc, base, bytes.count)
    }

    /// Whether this CPU's crc32 instruction is in use.
    public static var isHardwareAccelerated: Bool { raffle_crc32c_is_hardware() != 0 }
}
