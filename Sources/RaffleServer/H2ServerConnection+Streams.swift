import NIOCore
import RaffleAdmission
import RaffleHTTP2
import RaffleLedger
import RaffleWire

// The streams of an HTTP/2 connection: nghttp2's callbacks route each request (the stream table and
// `StreamState.routing`), feed entry bodies to the shared ingest session, hand admin requests to the
// admin API, and release replies as the ledger makes them durable. The I/O side (reads, writes,
// timeouts, GOAWAY) is in H2ServerConnection.swift.

extension H2ServerConnection: HTTP2SessionDelegate {
    // MARK: - HTTP2SessionDelegate

    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult {
        if let i = slot(of: stream) {
            // Trailers on an open stream: allowed, counted like headers.
            table.streams[i].headerCount = 0
            return .ok
        }
        _ = table.open(stream, now: nowNanos)
        loop.metrics.streams.increment()
        return .ok
    }

    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let i = slot(of: stream) else { return .ok }
        switch table.streams[i].takeHeader(
            name: name, value: value, maxFields: loop.configuration.maxHeaderFields, maxBytes: Int(loop.configuration.http2.maxHeaderListSize))
        {
        case .ok:
            return .ok
        case .entriesAuthorization:
            if !value.elementsEqual(lastAuthorization) {
                lastAuthorization = Array(value)
                lastClient = loop.admission.identify(authorization: value)
            }
            table.streams[i].client = lastClient
            return .ok
        case .tooLarge:
            glitch()
            return .resetStream
        }
    }

    func headersComplete(stream: Int32, endStream: Bool) {
        guard let i = slot(of: stream) else { return }
        if table.streams[i].route == .pending {
            if table.streams[i].headerCount == 0 { glitch() }
            switch table.streams[i].routing(servesEntries: admin.servesEntries) {
            case .entries:
                table.streams[i].route = .entries
            case .admin:
                table.streams[i].route = .admin
            case .refuse(let status, let message):
                answerJSON(i, status: status, AdminAPI.errorJSON(message))
                table.streams[i].route = .discard
            case .badContentType:
                table.streams[i].route = .discard
                table.streams[i].addError(ProtocolError(code: .badContentType, message: "content-type must be \(Wire.contentType)"), loop: loop)
                table.streams[i].finished = true
                settle(i)
            }
        }
        if endStream { requestEnded(i) }
    }

    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let i = slot(of: stream) else { return .ok }
        switch table.streams[i].route {
        case .entries where !table.streams[i].fatal:
            ingest(i, bytes)
        case .admin:
            if table.streams[i].adminBody.count + bytes.count <= loop.configuration.maxAdminBodyBytes {
                table.streams[i].adminBody.append(contentsOf: bytes)
            } else {
                table.streams[i].adminBodyTooLarge = true
            }
            session?.consume(stream: stream, count: bytes.count)
        default:
            session?.consume(stream: stream, count: bytes.count)
        }
        return .ok
    }

    func dataFrameComplete(stream: Int32, length: Int, endStream: Bool) {
        if length == 0 && !endStream { glitch() }
        guard endStream, let i = slot(of: stream) else { return }
        requestEnded(i)
    }

    func readBody(stream: Int32, into buffer: UnsafeMutableRawBufferPointer, endOfBody: inout Bool) -> Int? {
        guard let i = slot(of: stream) else {
            endOfBody = true
            return 0
        }
        let available = table.streams[i].replies.sendable
        if available > 0 {
            lastOutputProgressNanos = nowNanos > lastOutputProgressNanos ? nowNanos : monotonicNanoseconds()
            let n = min(available, buffer.count)
            table.streams[i].replies.out.withUnsafeReadableBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<n]))
            }
            table.streams[i].replies.out.moveReaderIndex(forwardBy: n)
            table.streams[i].replies.compact()
            if table.streams[i].isDrained { endOfBody = true }
            return n
        }
        if table.streams[i].isDrained {
            endOfBody = true
            return 0
        }
        table.streams[i].deferred = true
        return nil
    }

    func frameSent(stream: Int32, type: UInt8, endStream: Bool) {
        guard endStream, let i = slot(of: stream) else { return }
        // The response is complete. If the request body is still coming (a connection-level frame
        // error ended the stream early), reset it with NO_ERROR as PROTOCOL.md §11 says.
        if !table.streams[i].requestEnded { session?.resetStream(stream, errorCode: HTTP2Session.noError) }
    }

    func invalidFrame(stream: Int32, type: UInt8) {
        glitch()
    }

    /// Every stream the client resets costs a glitch: a rapid-reset flood runs the budget dry and is
    /// answered GOAWAY(ENHANCE_YOUR_CALM) (nghttp2's own reset limit, looser, is the backstop).
    func peerReset(stream: Int32, errorCode: UInt32) {
        glitch()
    }

    /// So does every PING and SETTINGS the client sends (each makes us queue an acknowledgement),
    /// ten glitches each: a client needs a handful per connection, so a flood of them — from a client
    /// that never reads the acknowledgements, too — is cut off after 100 (measured: a never-reading
    /// SETTINGS flood cost the server ~10× more per connection at one glitch each; RESULTS.md).
    func peerControlFrame(type: UInt8) {
        glitch(cost: 10)
    }

    func streamClosed(stream: Int32, errorCode: UInt32) {
        guard let i = slot(of: stream) else { return }
        if table.streams[i].waiting, let p = pendingSlots.firstIndex(of: i) { pendingSlots.remove(at: p) }
        releaseStream(i)
        if draining && table.openCount == 0 { close() }  // deferred to the next flush when in a callback
    }

    // MARK: - Entry path

    /// Decodes and admits whole frames from `bytes` (the shared exchange logic), then hands the
    /// bytes back to flow control unless replies are piling up.
    func ingest(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
        let now = IngestContext(client: table.streams[i].client, nowNanos: nowNanos, wallMilliseconds: nowWallMilliseconds, transport: .http2)
        table.streams[i].ingest(bytes, loop: loop, at: now, anonymous: &anonymousBucket)
        consume(i, bytes.count)
        settle(i)
    }

    /// Reopens the flow-control window unless replies are piling up waiting for the log.
    func consume(_ i: Int, _ count: Int) {
        table.streams[i].unconsumed += count
        let pending = table.streams[i].replies.out.readableBytes
        if pending <= loop.configuration.maxPendingReplyBytesPerStream {
            session?.consume(stream: table.streams[i].id, count: table.streams[i].unconsumed)
            table.streams[i].unconsumed = 0
        }
    }

    func requestEnded(_ i: Int) {
        guard !table.streams[i].requestEnded else { return }
        table.streams[i].requestEnded = true
        switch table.streams[i].route {
        case .entries:
            table.streams[i].entriesBodyEnded(loop)
        case .admin:
            if table.streams[i].adminBodyTooLarge {
                table.streams[i].answer(AdminResponse(status: 413, json: AdminAPI.errorJSON("request body over \(loop.configuration.maxAdminBodyBytes) bytes")))
            } else {
                let answer = admin.handle(
                    get: table.streams[i].isGet, post: table.streams[i].isPost, path: table.streams[i].path, body: table.streams[i].adminBody,
                    authorization: table.streams[i].authorization)
                switch answer {
                case .now(let response):
                    table.streams[i].answer(response)
                case .later(let work):
                    // The stream stays open, unfinished, until the ledger has answered.
                    let id = table.streams[i].id
                    let connection = NIOLoopBound(self, eventLoop: loop.eventLoop)
                    loop.eventLoop.makeFutureWithTask(work).whenSuccess { connection.value.adminAnswered(stream: id, $0) }
                    return
                }
            }
        case .pending, .discard:
            break
        }
        table.streams[i].finished = true
        settle(i)
    }

    /// A ledger-backed admin answer arrived (on the loop): send it unless the stream is gone.
    func adminAnswered(stream id: Int32, _ response: AdminResponse) {
        guard session != nil, let i = slot(of: id), table.streams[i].active, !table.streams[i].finished else { return }
        table.streams[i].answer(response)
        table.streams[i].finished = true
        settle(i)
        flushOutput()
    }

    func answerJSON(_ i: Int, status: Int, _ body: [UInt8]) {
        table.streams[i].answer(AdminResponse(status: status, json: body))
        table.streams[i].finished = true
        settle(i)
    }

    // MARK: - Durability

    /// Releases what is durable on stream `i`; registers to be woken if something is not yet.
    func settle(_ i: Int) {
        release(i)
        if table.streams[i].hasUnreleased && !table.streams[i].waiting {
            table.streams[i].waiting = true
            pendingSlots.append(i)
            loop.wait(self)
        }
    }

    /// `now`: the time to record the acks at (durabilityAdvanced reads the clock once for all of them).
    func release(_ i: Int, now: UInt64? = nil) {
        // The clock's inputs copied out first: a closure capturing `self` cost two retain/release
        // pairs per call.
        let (inSession, sessionNow) = (self.inSession, nowNanos)
        let progressed = table.streams[i].advance(loop) { now ?? (inSession ? sessionNow : monotonicNanoseconds()) }
        if (progressed || table.streams[i].isDrained) {
            if !table.streams[i].headersSubmitted {
                submitHeaders(i)
            } else if table.streams[i].deferred {
                table.streams[i].deferred = false
                session?.resumeData(stream: table.streams[i].id)
            }
        }
        if progressed && table.streams[i].unconsumed > 0 {
            consume(i, 0)
        }
    }

    func submitHeaders(_ i: Int) {
        guard let session else { return }
        let plain = table.streams[i].status == 200 && table.streams[i].bodyKind == .frames && table.streams[i].retryAfterMilliseconds == nil
        if !plain {
            headers.removeAll()
            headers.add(":status", integer: table.streams[i].status)
            table.streams[i].responseFields(durability: loop.ledger.durability) { headers.add($0, $1) }
        }
        do {
            // Two calls, not `plain ? plainFramesHead : headers`: the conditional copied a head
            // (a retain/release pair per array in it) where a call can borrow the `let`.
            if plain {
                try session.submitResponse(stream: table.streams[i].id, headers: plainFramesHead, hasBody: true)
            } else {
                try session.submitResponse(stream: table.streams[i].id, headers: headers, hasBody: true)
            }
            table.streams[i].headersSubmitted = true
        } catch {
            logger.debug("cannot submit a response on stream \(table.streams[i].id): \(error)")
        }
    }

    /// Called by the loop after the log committed: release what became durable, then one write.
    func durabilityAdvanced() {
        guard session != nil else { return }
        var still: [Int] = []
        let now = monotonicNanoseconds()
        for i in pendingSlots where table.streams[i].active {
            release(i, now: now)
            if table.streams[i].hasUnreleased { still.append(i) } else { table.streams[i].waiting = false }
        }
        pendingSlots = still
        if !still.isEmpty { loop.wait(self) }
        flushOutput()
    }
}
