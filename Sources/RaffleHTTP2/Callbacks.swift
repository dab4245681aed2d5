internal import CNGHTTP2

/// The nghttp2 callbacks, shared by every session (nghttp2 copies the callbacks object into each
/// session at creation). Each one finds its `HTTP2Session` through `user_data` and forwards to the
/// session's delegate.
final class Callbacks: Sendable {
    // Written once in init, read-only after; nghttp2 only reads it (copies it into each session).
    nonisolated(unsafe) let pointer: OpaquePointer?

    static let shared = Callbacks()

    /// Runs `body` with the session behind `user_data` without retaining it: the session outlives
    /// every callback (nghttp2 calls back only from inside `receive` / `drainOutput`, which the session
    /// runs), so the reference is guaranteed for the call. A retain/release pair per callback was ~4%
    /// of a load generator's profile.
    @inline(__always)
    static func with<R>(_ user: UnsafeMutableRawPointer?, _ otherwise: R, _ body: (HTTP2Session) -> R) -> R {
        guard let user else { return otherwise }
        return Unmanaged<HTTP2Session>.fromOpaque(user)._withUnsafeGuaranteedRef(body)
    }

    private init() {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        pointer = callbacks

        let beginHeaders: nghttp2_on_begin_headers_callback = { _, frame, user in
            guard let frame else { return 0 }
            return Callbacks.with(user, 0) { s in s.delegate.beginHeaders(stream: frame.pointee.hd.stream_id).code }
        }
        let onHeader: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, user in
            guard let frame else { return 0 }
            return Callbacks.with(user, 0) { s in
                s.delegate.header(
                    stream: frame.pointee.hd.stream_id, name: UnsafeRawBufferPointer(start: name, count: nameLength),
                    value: UnsafeRawBufferPointer(start: value, count: valueLength)
                ).code
            }
        }
        let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, user in
            guard let frame else { return 0 }
            let hd = frame.pointee.hd
            let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch UInt32(hd.type) {
            case NGHTTP2_HEADERS.rawValue:
                Callbacks.with(user, ()) { s in s.delegate.headersComplete(stream: hd.stream_id, endStream: endStream) }
            case NGHTTP2_DATA.rawValue:
                Callbacks.with(user, ()) { s in s.delegate.dataFrameComplete(stream: hd.stream_id, length: hd.length, endStream: endStream) }
            case NGHTTP2_PING.rawValue, NGHTTP2_SETTINGS.rawValue:
                if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 {
                    Callbacks.with(user, ()) { s in s.delegate.peerControlFrame(type: hd.type) }
                }
            case NGHTTP2_RST_STREAM.rawValue:
                let code = frame.pointee.rst_stream.error_code
                Callbacks.with(user, ()) { s in s.delegate.peerReset(stream: hd.stream_id, errorCode: code) }
            default:
                break
            }
            return 0
        }
        let onData: nghttp2_on_data_chunk_recv_callback = { _, _, stream, data, length, user in
            Callbacks.with(user, 0) { s in s.delegate.data(stream: stream, bytes: UnsafeRawBufferPointer(start: data, count: length)).code }
        }
        let onFrameSend: nghttp2_on_frame_send_callback = { _, frame, user in
            guard let frame else { return 0 }
            let hd = frame.pointee.hd
            Callbacks.with(user, ()) { s in
                s.delegate.frameSent(stream: hd.stream_id, type: hd.type, endStream: hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0)
            }
            return 0
        }
        let onInvalid: nghttp2_on_invalid_frame_recv_callback = { _, frame, _, user in
            guard let frame else { return 0 }
            Callbacks.with(user, ()) { s in s.delegate.invalidFrame(stream: frame.pointee.hd.stream_id, type: frame.pointee.hd.type) }
            return 0
        }
        let onClose: nghttp2_on_stream_close_callback = { _, stream, errorCode, user in
            Callbacks.with(user, ()) { s in s.delegate.streamClosed(stream: stream, errorCode: errorCode) }
            return 0
        }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, beginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onData)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSend)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, onInvalid)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onClose)
    }

    deinit { nghttp2_session_callbacks_del(pointer) }

    /// The data provider every body uses: asks the delegate for the stream's next bytes.
    static var dataProvider: nghttp2_data_provider {
        let read: nghttp2_data_source_read_callback = { _, stream, buf, length, flags, _, user in
            guard let buf, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            return Callbacks.with(user, Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue)) { s in
                var end = false
                guard let n = s.delegate.readBody(stream: stream, into: UnsafeMutableRawBufferPointer(start: buf, count: length), endOfBody: &end) else {
                    return Int(NGHTTP2_ERR_DEFERRED.rawValue)
                }
                if end { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
                return n
            }
        }
        return nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: read)
    }
}
