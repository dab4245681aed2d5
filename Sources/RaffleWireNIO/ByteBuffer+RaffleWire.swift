public import NIOCore
public import RaffleWire

extension ByteBuffer {
    /// Decodes the next frame from the readable bytes in place (no copy), hands its view to `body`,
    /// then consumes the frame. Returns nil, consuming nothing, when more bytes are needed.
    ///
    /// On a frame-level `ProtocolError` (its `skippableLength` is set) the bad frame's bytes are
    /// consumed, so the next call reads the frame after it; on a connection-level error nothing is
    /// consumed and the caller answers and closes. The view must not escape `body`.
    public mutating func readRaffleFrame<Result>(
        using decoder: FrameDecoder, endOfInput: Bool = false, _ body: (FrameView) -> Result
    ) throws(ProtocolError) -> Result? {
        let outcome: Swift.Result<(Result, Int)?, ProtocolError> = withUnsafeReadableBytes { bytes in
            do throws(ProtocolError) {
                guard let view = try decoder.decode(bytes, endOfInput: endOfInput) else { return .success(nil) }
                return .success((body(view), view.frameLength))
            } catch {
                return .failure(error)
            }
        }
        switch outcome {
        case .success(.some((let result, let length))):
            moveReaderIndex(forwardBy: length)
            return result
        case .success(.none):
            return nil
        case .failure(let error):
            if let skip = error.skippableLength { moveReaderIndex(forwardBy: Swift.min(skip, readableBytes)) }
            throw error
        }
    }

    /// Reads just the next frame's header (checking magic, version and the length limit) without
    /// consuming anything: lets a transport refuse an oversized frame before buffering its payload.
    public func peekRaffleFrameHeader(using decoder: FrameDecoder) throws(ProtocolError) -> FrameHeader? {
        let outcome: Swift.Result<FrameHeader?, ProtocolError> = withUnsafeReadableBytes { bytes in
            do throws(ProtocolError) { return .success(try decoder.decodeHeader(bytes)) } catch { return .failure(error) }
        }
        return try outcome.get()
    }

    /// Appends `frame`, encoded, and returns the bytes written (0 if the frame exceeds the
    /// protocol's absolute payload limit, in which case nothing is written).
    @discardableResult
    public mutating func writeRaffleFrame(_ frame: Frame) -> Int {
        let length = FrameEncoder.encodedLength(of: frame)
        return writeWithUnsafeMutableBytes(minimumWritableBytes: length) { FrameEncoder.encode(frame, into: $0) }
    }

    /// Appends a batch ack built from `outcomes` without an intermediate `Frame` (the server's path).
    @discardableResult
    public mutating func writeBatchAck(
        requestID: UInt64, raffleID: UInt64, outcomes: UnsafeBufferPointer<EntryOutcome>, flags: FrameFlags = []
    ) -> Int {
        let length = Wire.headerSize + Wire.batchPrefixSize + outcomes.count
        return writeWithUnsafeMutableBytes(minimumWritableBytes: length) {
            FrameEncoder.encodeBatchAck(requestID: requestID, raffleID: raffleID, outcomes: outcomes, flags: flags, into: $0)
        }
    }
}
