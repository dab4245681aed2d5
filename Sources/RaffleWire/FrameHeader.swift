/// The fixed 24-byte header every frame starts with (little-endian):
///
/// ```
/// offset size field
///  0     2    magic "RF" (0x52 0x46)
///  2     1    version (1)
///  3     1    type
///  4     2    flags
///  6     2    reserved (0)
///  8     4    payload length (bytes after the header)
/// 12     8    request id (client-chosen, echoed in every reply)
/// 20     4    checksum: CRC32C of bytes 0..<20 then the payload when flag `checksum` is set, else 0
/// ```
public struct FrameHeader: Hashable, Sendable {
    /// Protocol version; 1.
    public var version: UInt8
    /// The frame type.
    public var type: FrameType
    /// The flag word, including advisory bits the receiver ignores.
    public var flags: FrameFlags
    /// Payload length in bytes.
    public var payloadLength: UInt32
    /// The client-chosen request id.
    public var requestID: UInt64
    /// The checksum field as read (0 when the checksum flag is clear).
    public var checksum: UInt32

    /// Creates a header.
    public init(
        version: UInt8 = Wire.version, type: FrameType, flags: FrameFlags = [], payloadLength: UInt32,
        requestID: UInt64, checksum: UInt32 = 0
    ) {
        self.version = version
        self.type = type
        self.flags = flags
        self.payloadLength = payloadLength
        self.requestID = requestID
        self.checksum = checksum
    }

    /// Header plus payload, in bytes.
    public var frameLength: Int { Wire.headerSize + Int(payloadLength) }
}

extension UnsafeRawBufferPointer {
    /// Little-endian loads at offsets the caller has checked against `count`.
    @inline(__always)
    func le64(_ offset: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    @inline(__always)
    func le32(_ offset: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    @inline(__always)
    func le16(_ offset: Int) -> UInt16 { UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
}

extension UnsafeMutableRawBufferPointer {
    /// Little-endian stores at offsets the caller has checked against `count`.
    @inline(__always)
    func putLE64(_ value: UInt64, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self) }
    @inline(__always)
    func putLE32(_ value: UInt32, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self) }
    @inline(__always)
    func putLE16(_ value: UInt16, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self) }
}
