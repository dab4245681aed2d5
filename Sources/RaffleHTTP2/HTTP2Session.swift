// With Callbacks.swift, the only place that calls into libnghttp2 (this file: the session, its
// settings and submissions; Callbacks.swift: the C callbacks that forward to it). Server and client
// both drive an `HTTP2Session`; what they do with its events lives in their delegates.
internal import CNGHTTP2
public import NIOCore

/// What an HTTP/2 session reports. Every method runs synchronously inside `receive` or
/// `drainOutput`, on the connection's event loop.
public protocol HTTP2SessionDelegate: AnyObject {
    /// A HEADERS frame opens stream `stream` (a request on a server, a response on a client).
    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult
    /// One header field. `name` and `value` are valid only during the call.
    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult
    /// A complete HEADERS block arrived; `endStream` when it carried END_STREAM.
    func headersComplete(stream: Int32, endStream: Bool)
    /// Body bytes of `stream`, valid only during the call.
    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult
    /// A whole DATA frame arrived (after its `data` calls). `length` is its payload length.
    func dataFrameComplete(stream: Int32, length: Int, endStream: Bool)
    /// The session wants body bytes for `stream` (a submitted response or request with a body):
    /// copy at most `into.count` bytes and return the count, or `nil` to defer (call `resumeData`
    /// later). Set `endOfBody` when these are the last bytes.
    func readBody(stream: Int32, into: UnsafeMutableRawBufferPointer, endOfBody: inout Bool) -> Int?
    /// A frame was sent; `endStream` when it ended our side of `stream`.
    func frameSent(stream: Int32, type: UInt8, endStream: Bool)
    /// A frame the peer sent was invalid (nghttp2 answers it itself); counted for abuse limits.
    func invalidFrame(stream: Int32, type: UInt8)
    /// `stream` closed, with the HTTP/2 error code (0 = NO_ERROR).
    func streamClosed(stream: Int32, errorCode: UInt32)
    /// The peer sent RST_STREAM for `stream` (before `streamClosed`). Default: nothing.
    func peerReset(stream: Int32, errorCode: UInt32)
    /// The peer sent a PING or SETTINGS frame that asks for an acknowledgement (`type` 6 or 4).
    /// Default: nothing.
    func peerControlFrame(type: UInt8)
}

extension HTTP2SessionDelegate {
    public func peerReset(stream: Int32, errorCode: UInt32) {}
    public func peerControlFrame(type: UInt8) {}
}

/// A libnghttp2 session (server or client) driven through memory: bytes in via `receive`, bytes out
/// via `drainOutput`; nghttp2 does no I/O of its own. Not thread-safe: owned by one event loop.
public final class HTTP2Session {
    /// A callback's answer to nghttp2.
    public enum CallbackResult: Sendable {
        /// Go on.
        case ok
        /// Reset this stream (e.g. a header limit was exceeded); the connection goes on.
        case resetStream
        /// Fatal: tear down the whole session.
        case fail

        var code: Int32 {
            switch self {
            case .ok: 0
            case .resetStream: NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
            case .fail: NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
            }
        }
    }

    /// Server-side protections nghttp2 enforces itself (the rest the server counts on its own).
    public struct Options: Sendable, Hashable {
        /// Most SETTINGS entries accepted in one frame. Default 32.
        public var maxSettingsEntries = 32
        /// Peer RST_STREAM rate limit: burst and per-second refill. Default 1,000 / 33.
        /// nghttp2's own limit on streams the peer resets (it answers GOAWAY(INTERNAL_ERROR)): a
        /// backstop, twice as loose as the server's glitch budget, which counts every peer reset and
        /// answers GOAWAY(ENHANCE_YOUR_CALM) first.
        public var resetBurst: UInt64 = 2_000
        public var resetRatePerSecond: UInt64 = 66
        /// Most queued outbound PING/SETTINGS acks before the session fails. Default 1,000.
        public var maxOutboundAcks = 1_000
        /// Most CONTINUATION frames per header block. Default 8.
        public var maxContinuations = 8
        /// Flow control is ours: windows reopen only through `consume`. Default true.
        public var manualFlowControl = true
        /// The most bytes of nghttp2's freed blocks the session keeps for reuse (its streams and
        /// outbound items; see `trimMemory`). 0: every block is malloc'd at its exact size (what the
        /// fuzz builds use, so AddressSanitizer sees nghttp2's real bounds). Default 64 KiB.
        public var allocatorCacheBytes = 64 << 10
        public init() {}
    }

    /// HTTP/2 settings this side advertises.
    public struct Settings: Sendable, Hashable {
        public var maxConcurrentStreams: UInt32 = 256
        public var initialWindowSize: UInt32 = 1 << 20
        public var maxHeaderListSize: UInt32 = 16_384
        public var connectionWindowSize: Int32 = 16 << 20
        public init() {}
    }

    /// The two session roles.
    public enum Role: Sendable { case server, client }

    private var session: OpaquePointer?
    /// nghttp2's memory for this session; outlives `session` (stored properties go after deinit).
    private let allocator: SessionAllocator
    /// A server's checks of the client's frames that nghttp2 leaves out (nil on a client, and once
    /// one failed).
    private var rules: FrameRules?
    /// The delegate, held strongly: the owner (usually the delegate itself) breaks the cycle by
    /// dropping the session when its connection ends. A strong `let` because nghttp2's callbacks can
    /// then borrow it; through `unowned(unsafe)` each callback paid a retain/release pair (13 of the
    /// server's 48 pairs per single-entry request, counted with uprobes; Bench/RESULTS.md).
    public let delegate: any HTTP2SessionDelegate

    /// An error from nghttp2 (a negative return code) with its text.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var code: Int
        /// Set when the session itself ended the connection for a rule nghttp2 does not check
        /// (see `FrameRules`); a GOAWAY with the rule's code is queued for `drainOutput`.
        public var reason: String?
        public var description: String {
            reason.map { "protocol violation: " + $0 } ?? "nghttp2: " + String(cString: nghttp2_strerror(Int32(truncatingIfNeeded: code)))
        }
    }

    /// Creates a session. A server session expects the client preface; a client session sends it.
    /// The session keeps `delegate` alive until it is released: drop it when the connection ends.
    public init(role: Role, delegate: any HTTP2SessionDelegate, options: Options = Options()) throws(Failure) {
        self.delegate = delegate
        allocator = SessionAllocator(limit: options.allocatorCacheBytes)
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_max_settings(option, options.maxSettingsEntries)
        nghttp2_option_set_stream_reset_rate_limit(option, options.resetBurst, options.resetRatePerSecond)
        nghttp2_option_set_max_outbound_ack(option, options.maxOutboundAcks)
        nghttp2_option_set_max_continuations(option, options.maxContinuations)
        nghttp2_option_set_no_closed_streams(option, 1)
        if options.manualFlowControl { nghttp2_option_set_no_auto_window_update(option, 1) }
        let user = Unmanaged.passUnretained(self).toOpaque()
        var mem = allocator.mem
        let rc =
            role == .server
            ? nghttp2_session_server_new3(&session, Callbacks.shared.pointer, user, option, &mem)
            : nghttp2_session_client_new3(&session, Callbacks.shared.pointer, user, option, &mem)
        guard rc == 0 else { throw Failure(code: Int(rc)) }
        if role == .server { rules = FrameRules() }
    }

    deinit { close() }

    /// Deletes the session; no callback fires after this. Idempotent.
    public func close() {
        if let session { nghttp2_session_del(session) }
        session = nil
    }

    /// Hands the memory kept for reuse back to malloc; call when the connection has no stream open.
    public func trimMemory() { allocator.trim() }

    /// Bytes of freed nghttp2 blocks kept for reuse now (at most `Options.allocatorCacheBytes`).
    public var cachedMemoryBytes: Int { allocator.cachedBytes }

    /// Whether the session still wants to read or write (false after GOAWAY is done, or on failure).
    public var isAlive: Bool {
        guard let session else { return false }
        return nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0
    }

    /// Queues our SETTINGS and opens the connection-level receive window.
    public func submitSettings(_ s: Settings) throws(Failure) {
        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: s.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: s.initialWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: s.maxHeaderListSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue), value: 1),
        ]
        try check(nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count))
        try check(nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, s.connectionWindowSize))
    }

    /// Feeds received bytes; delegate callbacks run inside. Returns the bytes consumed.
    @discardableResult
    public func receive(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> Int {
        guard let session, let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        if let violation = rules?.scan(bytes) ?? nil {
            // nghttp2 takes what came before the offending frame; then the connection ends with the
            // rule's code (GOAWAY on the next drainOutput).
            rules = nil
            if violation.offset > 0 {
                let n = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), violation.offset)
                if n < 0 { throw Failure(code: n) }
            }
            nghttp2_session_terminate_session(session, violation.errorCode)
            throw Failure(code: 0, reason: violation.reason)
        }
        let n = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if n < 0 { throw Failure(code: n) }
        return n
    }

    /// Appends everything nghttp2 has to send to `buffer` (one coalesced write for the caller).
    /// Returns the bytes appended.
    @discardableResult
    public func drainOutput(into buffer: inout ByteBuffer) throws(Failure) -> Int {
        guard let session else { return 0 }
        var total = 0
        while true {
            var chunk: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &chunk)
            if n < 0 { throw Failure(code: n) }
            guard n > 0, let chunk else { break }
            buffer.writeBytes(UnsafeRawBufferPointer(start: chunk, count: n))
            total += n
        }
        return total
    }

    /// Submits response headers for `stream`, with a body read through `readBody` when `hasBody`.
    public func submitResponse(stream: Int32, headers: HeaderBlock, hasBody: Bool) throws(Failure) {
        try headers.withNV { nv, count throws(Failure) in
            if hasBody {
                var provider = Callbacks.dataProvider
                try check(nghttp2_submit_response(session, stream, nv, count, &provider))
            } else {
                try check(nghttp2_submit_response(session, stream, nv, count, nil))
            }
        }
    }

    /// Submits a request; returns its stream id. The body, if any, is read through `readBody`.
    public func submitRequest(headers: HeaderBlock, hasBody: Bool) throws(Failure) -> Int32 {
        try headers.withNV { nv, count throws(Failure) -> Int32 in
            var provider = Callbacks.dataProvider
            let id =
                hasBody
                ? nghttp2_submit_request(session, nil, nv, count, &provider, nil)
                : nghttp2_submit_request(session, nil, nv, count, nil, nil)
            if id < 0 { throw Failure(code: Int(id)) }
            return id
        }
    }

    /// Wakes a body that `readBody` deferred.
    public func resumeData(stream: Int32) {
        if let session { _ = nghttp2_session_resume_data(session, stream) }
    }

    /// Reopens flow-control windows (stream and connection) for `count` bytes the caller has taken.
    public func consume(stream: Int32, count: Int) {
        guard let session, count > 0 else { return }
        _ = nghttp2_session_consume(session, stream, count)
    }

    /// Resets `stream` with an HTTP/2 error code (0 = NO_ERROR).
    public func resetStream(_ stream: Int32, errorCode: UInt32) {
        if let session { _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, errorCode) }
    }

    /// Sends GOAWAY with `errorCode` (e.g. `enhanceYourCalm`); no new streams are accepted after it.
    public func goAway(errorCode: UInt32) {
        guard let session else { return }
        let last = nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode, nil, 0)
    }

    /// Starts a graceful shutdown: tells the client no new streams will be accepted.
    public func shutdownNotice() {
        if let session { _ = nghttp2_submit_shutdown_notice(session) }
    }

    /// HTTP/2 error codes used by raffled.
    public static let noError: UInt32 = NGHTTP2_NO_ERROR.rawValue
    public static let enhanceYourCalm: UInt32 = NGHTTP2_ENHANCE_YOUR_CALM.rawValue
    public static let refusedStream: UInt32 = NGHTTP2_REFUSED_STREAM.rawValue
    public static let protocolError: UInt32 = NGHTTP2_PROTOCOL_ERROR.rawValue
    /// Frame type codes.
    public static let frameData: UInt8 = UInt8(NGHTTP2_DATA.rawValue)
    public static let frameHeaders: UInt8 = UInt8(NGHTTP2_HEADERS.rawValue)

    private func check(_ rc: Int32) throws(Failure) {
        if rc < 0 { throw Failure(code: Int(rc)) }
    }
}

/// Header fields for a response or request, built in reusable storage (no allocation once warm).
public struct HeaderBlock: Sendable {
    private var bytes: [UInt8] = []
    private var fields: [(name: Range<Int>, value: Range<Int>)] = []

    public init() {
        bytes.reserveCapacity(512)
        fields.reserveCapacity(8)
    }

    /// Empties the block, keeping its storage.
    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        fields.removeAll(keepingCapacity: true)
    }

    /// Adds a field. Names must be lower-case.
    public mutating func add(_ name: StaticString, _ value: some StringProtocol) {
        let n = bytes.count
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        let v = bytes.count
        bytes.append(contentsOf: value.utf8)
        fields.append((n..<v, v..<bytes.count))
    }

    /// Adds a field whose name is only known at run time (lower-cased by the caller).
    public mutating func addDynamic(_ name: String, _ value: String) {
        let n = bytes.count
        bytes.append(contentsOf: name.utf8)
        let v = bytes.count
        bytes.append(contentsOf: value.utf8)
        fields.append((n..<v, v..<bytes.count))
    }

    /// Adds a field whose value is a decimal integer, without building a String.
    public mutating func add(_ name: StaticString, integer: Int) {
        let n = bytes.count
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        let v = bytes.count
        if integer == 0 {
            bytes.append(0x30)
        } else {
            var x = integer.magnitude
            var digits = 0
            while x > 0 {
                bytes.append(UInt8(0x30 + x % 10))
                x /= 10
                digits += 1
            }
            bytes[(bytes.count - digits)...].reverse()
            if integer < 0 { bytes.insert(0x2D, at: v) }
        }
        fields.append((n..<v, v..<bytes.count))
    }

    fileprivate func withNV<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) throws(HTTP2Session.Failure) -> R) throws(HTTP2Session.Failure) -> R {
        // nghttp2 copies names and values on submit, so these pointers need only live for the call.
        try bytes.withUnsafeBufferPointer { b throws(HTTP2Session.Failure) -> R in
            try withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(fields.count, 1)) { nv throws(HTTP2Session.Failure) -> R in
                guard let base = b.baseAddress, let nvBase = nv.baseAddress else {
                    throw HTTP2Session.Failure(code: Int(NGHTTP2_ERR_INVALID_ARGUMENT.rawValue))
                }
                let mutableBase = UnsafeMutablePointer(mutating: base)
                for (i, f) in fields.enumerated() {
                    nv[i] = nghttp2_nv(
                        name: mutableBase + f.name.lowerBound, value: mutableBase + f.value.lowerBound,
                        namelen: f.name.count, valuelen: f.value.count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                }
                return try body(UnsafePointer(nvBase), fields.count)
            }
        }
    }
}
