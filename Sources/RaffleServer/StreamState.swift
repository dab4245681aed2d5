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

    /// A frame that arrived in pieces, in an ingest buffer.
    var partial = PartialFrame()
    var framesSeen = 0
    /// Body bytes received but not yet handed back to flow control.
    var unconsumed = 0

    var adminBody: [UInt8] = []
    var adminBodyTooLarge = false
    /// The `authorization` value of an admin or read request (entries requests keep theirs per
    /// connection, for admission).
    var authorization: [UInt8] = []

    /// Replies, in request order, released as the log makes them durable.
    var replies = ReplyQueue()

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

    var hasUnreleased: Bool { replies.hasUnreleased }

    /// Everything produced has been sent and nothing more will be.
    var isDrained: Bool { finished && !replies.hasUnreleased && replies.out.readableBytes == 0 }

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
        partial = PartialFrame()
        framesSeen = 0
        unconsumed = 0
        adminBody.removeAll(keepingCapacity: true)
        adminBodyTooLarge = false
        authorization.removeAll(keepingCapacity: true)
        replies.reset()
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
