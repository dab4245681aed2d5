/// An HTTP/2 connection's streams: `StreamState` slots reused across streams (their buffers keep their
/// capacity), found by stream id with a one-entry cache for the common case of frames of one stream
/// arriving together. Pure bookkeeping: no I/O, no session.
struct StreamTable {
    /// The slots; `streams[i].active` says whether slot `i` holds an open stream.
    var streams: [StreamState] = []
    private var freeSlots: [Int] = []
    private var slotOfStream: [Int32: Int] = [:]
    private var last: (id: Int32, slot: Int) = (0, -1)
    /// Streams open now.
    private(set) var openCount = 0

    /// The slot of open stream `id`, if it is open.
    @inline(__always)
    mutating func slot(of id: Int32) -> Int? {
        if last.id == id && last.slot >= 0 { return last.slot }
        guard let i = slotOfStream[id] else { return nil }
        last = (id, i)
        return i
    }

    /// Opens stream `id` in a free slot (or a new one) and returns the slot.
    mutating func open(_ id: Int32, now: UInt64) -> Int {
        let i: Int
        if let free = freeSlots.popLast() {
            i = free
        } else {
            streams.append(StreamState())
            i = streams.count - 1
        }
        streams[i].reset(id: id, now: now)
        slotOfStream[id] = i
        last = (id, i)
        openCount += 1
        return i
    }

    /// Frees slot `i` (its stream ended or was reset); the caller has handed back what it held.
    mutating func close(_ i: Int) {
        let id = streams[i].id
        streams[i].active = false
        streams[i].replies.out.clear()
        slotOfStream[id] = nil
        if last.id == id { last = (0, -1) }
        freeSlots.append(i)
        openCount -= 1
    }

    /// The slots of open streams.
    var openSlots: [Int] { streams.indices.filter { streams[$0].active } }
}

/// What a header field did to a request being routed (HTTP/2: one call per field, from nghttp2's
/// callback; no allocation for the fields the entry path uses).
enum HeaderVerdict: Equatable {
    case ok
    /// Over the header count or size limit: reset the stream and count a glitch.
    case tooLarge
    /// The `authorization` of an entries request: the caller identifies the client (the connection
    /// compares it once per change, not per request) and sets `client`.
    case entriesAuthorization
}

extension StreamState {
    /// Takes one request header field: counts it against the limits and records what routing needs
    /// (method, path, content type, the `authorization` of an admin call). For an entries request's
    /// `authorization` it answers `.entriesAuthorization` and leaves `client` to the caller. (A verdict,
    /// not a closure: a closure capturing the connection cost a retain/release pair per field.)
    mutating func takeHeader(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, maxFields: Int, maxBytes: Int) -> HeaderVerdict {
        headerCount += 1
        headerBytes += name.count + value.count + 32
        if headerCount > maxFields || headerBytes > maxBytes { return .tooLarge }
        guard route == .pending else { return .ok }
        if equal(name, ":method") {
            isPost = equal(value, "POST")
            isGet = equal(value, "GET") || equal(value, "HEAD")
        } else if equal(name, ":path") {
            if equal(value, "/v1/entries") {
                pathIsEntries = true
            } else {
                path = String(decoding: value, as: UTF8.self)
            }
        } else if equal(name, "authorization") {
            if pathIsEntries {
                return .entriesAuthorization
            } else {
                // An admin call's credentials (pseudo-headers come first, so the path is known). A
                // second field is joined with a comma (RFC 9110 §5.3), so it matches no key: 403.
                if !authorization.isEmpty { authorization.append(contentsOf: [0x2C, 0x20]) }
                authorization.append(contentsOf: value)
            }
        } else if equal(name, "content-type") {
            // The exact spelling is checked first (no allocation); any other is parsed.
            contentTypeOK = equal(value, "application/vnd.raffled.frames")
                || startsWith(value, "application/vnd.raffled.frames;")
                || isFramesContentType(String(decoding: value, as: UTF8.self))
        }
        return .ok
    }

    /// Where a request whose header block is complete goes.
    enum Routing: Equatable {
        /// The entry path.
        case entries
        /// The JSON admin and read API.
        case admin
        /// Answered now with a JSON error (status, message); the body is dropped.
        case refuse(status: Int, message: String)
        /// Answered now with a frame error (wrong content type); the body is dropped.
        case badContentType
    }

    /// Routes a request from its method, path and content type; `servesEntries` is false on the
    /// admin listener.
    func routing(servesEntries: Bool) -> Routing {
        guard pathIsEntries else { return .admin }
        if !servesEntries { return .refuse(status: 404, message: "entries are not taken on the admin listener") }
        if !isPost { return .refuse(status: 405, message: "use POST for /v1/entries") }
        return contentTypeOK ? .entries : .badContentType
    }
}

@inline(__always)
private func equal(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    guard bytes.count == literal.utf8CodeUnitCount, let base = bytes.baseAddress else { return bytes.isEmpty && literal.utf8CodeUnitCount == 0 }
    return memcmp(base, literal.utf8Start, bytes.count) == 0
}

@inline(__always)
private func startsWith(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    guard bytes.count >= literal.utf8CodeUnitCount, let base = bytes.baseAddress else { return false }
    return memcmp(base, literal.utf8Start, literal.utf8CodeUnitCount) == 0
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
