// CRC32C lives in its own module (the log uses it too); the codec's users get it with the codec.
@_exported public import RaffleCRC32C

extension CRC32C {
    /// The checksum a frame's header carries: bytes 0..<20 of the header, then the payload (PROTOCOL.md §9).
    @inline(__always)
    static func frameChecksum(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> UInt32 {
        extend(extend(0, UnsafeRawBufferPointer(rebasing: header[0..<20])), payload)
    }
}
