import NIOCore
import RaffleAdmission
import RaffleWire

/// What a request stream is for, decided when its headers are complete.
enum Route: Equatable {
    /// Headers still arriving.
    case pending
    /// `POST /v1/entries` with the frames content type: the entry path.
    case entries
    /// Another path: the JSON admin and read API.
    case admin
    /// Answered already (bad method, content type, ...): the body is read and dropped.
    case discard
}

/// How a response body is labelled.
enum BodyKind: UInt8 {
    case frames, json, text, csv, ndjson

    var contentType: String {
        switch self {
        case .frames: Wire.contentType
        case .json: "application/json"
        case .text: "text/plain; version=0.0.4; charset=utf-8"
        case .csv: "text/csv; charset=utf-8"
        case .ndjson: "application/x-ndjson"
        }
    }
}

/// One reply's place in a stream's output: sent only when the log has committed `lsn`.
struct ReplyMark {
    /// Cumulative: the largest commit point of this reply and every reply before it on the stream.
    var lsn: UInt64
    /// Output position where this reply ends.
    var end: Int
    /// The request id it answers (to answer with an error instead if the log fails).
    var requestID: UInt64
}

/// Per-stream state: a plain struct in the connection's table, reused across streams (its buffers
/// keep their capacity), owned by the connection's event loop. No object, channel or pipeline per
/// stream.
struct StreamState {
    var id: Int32 = 0
    var active = false
    var route = Route.pending
    var isPost = false
    var isGet = false
    var pathIsEntries = false
    var contentTypeOK = false
    var path = ""
    var headerCount = 0
    var headerBytes = 0
    var startNanos: UInt64 = 0

    /// Ingest buffer holding a frame that arrived in pieces (-1: none) and how full it is.
    var slot: Int32 = -1
    var slotFill = 0
    var framesSeen = 0
    /// Body bytes received but not yet handed back to flow control.
    var unconsumed = 0

    var adminBody: [UInt8] = []
    var adminBodyTooLarge = false

    /// Replies, in request order. Bytes before `released` may be sent.
    var out = ByteBuffer()
    var released = 0
    var marks: [ReplyMark] = []
    var markHead = 0
    var cumulativeLSN: UInt64 = 0

    var status = 200
    var bodyKind = BodyKind.frames
    var retryAfterMilliseconds: UInt32?
    /// The client the request's `authorization` names (nil: anonymous).
    var client: Int?
    /// For a 429: the policy that refused, for the `ratelimit-policy` / `ratelimit` headers.
    var throttlePolicy: (name: String, limit: RateLimit, remaining: UInt64)?
    var headersSubmitted = false
    var deferred = false
    /// No more request bytes will come (END_STREAM seen).
    var requestEnded = false
    /// No more replies will be added: the request ended, or a connection-level error ended it.
    var finished = false
    /// A connection-level frame error ended the stream: remaining body bytes are dropped.
    var fatal = false
    var waiting = false

    var hasUnreleased: Bool { markHead < marks.count }

    /// Everything produced has been sent and nothing more will be.
    var isDrained: Bool { finished && !hasUnreleased && out.readableBytes == 0 }

    mutating func reset(id: Int32, now: UInt64) {
        self.id = id
        active = true
        route = .pending
        isPost = false
        isGet = false
        pathIsEntries = false
        contentTypeOK = false
        path = ""
        headerCount = 0
        headerBytes = 0
        startNanos = now
        slot = -1
        slotFill = 0
        framesSeen = 0
        unconsumed = 0
        adminBody.removeAll(keepingCapacity: true)
        adminBodyTooLarge = false
        out.clear()
        released = 0
        marks.removeAll(keepingCapacity: true)
        markHead = 0
        cumulativeLSN = 0
        status = 200
        bodyKind = .frames
        retryAfterMilliseconds = nil
        client = nil
        throttlePolicy = nil
        headersSubmitted = false
        deferred = false
        requestEnded = false
        finished = false
        fatal = false
        waiting = false
    }
}
