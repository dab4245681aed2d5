import Foundation
import RaffleAdmission
import RaffleCore
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// An HTTP/1.1 response as a test reads it off a raw socket.
struct HTTP1Response {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }

    /// Every whole response at the start of `bytes` (content-length or chunked bodies); what is left.
    static func parseAll(_ bytes: [UInt8]) -> [HTTP1Response] {
        var out: [HTTP1Response] = []
        var at = 0
        while let response = parse(bytes, at: &at) { out.append(response) }
        return out
    }

    private static func parse(_ bytes: [UInt8], at: inout Int) -> HTTP1Response? {
        guard let headEnd = find(bytes, Array("\r\n\r\n".utf8), from: at) else { return nil }
        let lines = String(decoding: bytes[at..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var cursor = headEnd + 4
        var body: [UInt8] = []
        let lookup = { (name: String) in headers.first { $0.0 == name }?.1 }
        if status == 100 {
            at = cursor
            return HTTP1Response(status: status, headers: headers, body: [])
        } else if let length = lookup("content-length").flatMap(Int.init) {
            guard bytes.count >= cursor + length else { return nil }
            body = Array(bytes[cursor..<(cursor + length)])
            cursor += length
        } else if lookup("transfer-encoding") == "chunked" {
            while true {
                guard let lineEnd = find(bytes, Array("\r\n".utf8), from: cursor),
                    let size = Int(String(decoding: bytes[cursor..<lineEnd], as: UTF8.self), radix: 16)
                else { return nil }
                cursor = lineEnd + 2
                guard bytes.count >= cursor + size + 2 else { return nil }
                body += bytes[cursor..<(cursor + size)]
                cursor += size + 2
                if size == 0 { break }
            }
        }
        at = cursor
        return HTTP1Response(status: status, headers: headers, body: body)
    }

    private static func find(_ bytes: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        guard bytes.count >= needle.count, from <= bytes.count - needle.count else { return nil }
        for i in from...(bytes.count - needle.count) where bytes[i..<(i + needle.count)].elementsEqual(needle) { return i }
        return nil
    }
}

/// An HTTP/1.1 request's bytes.
func http1(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [], chunked: Bool = false) -> [UInt8] {
    var head = "\(method) \(path) HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    if chunked {
        head += "transfer-encoding: chunked\r\n"
    } else if !body.isEmpty || method == "POST" {
        head += "content-length: \(body.count)\r\n"
    }
    return Array((head + "\r\n").utf8) + body
}

/// A chunk of a chunked request body (an empty one ends the body).
func chunk(_ bytes: [UInt8]) -> [UInt8] {
    Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + Array("\r\n".utf8)
}

let framesType = ("content-type", Wire.contentType)

@Suite("HTTP/1.1 on the main port", .timeLimit(.minutes(1)))
struct HTTP1Tests {
    /// Reads responses until `count` have arrived (or the connection closes).
    func responses(_ s: RawSocket, _ count: Int, seconds: Double = 5) -> (responses: [HTTP1Response], closed: Bool) {
        let (bytes, closed) = s.readBytes(for: seconds) { HTTP1Response.parseAll($0).filter { $0.status != 100 }.count >= count }
        return (HTTP1Response.parseAll(bytes), closed)
    }

    @Test func entriesOverHTTP1WithTheSameFramesAndStatusMapping() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let s = try RawSocket(port: f.server.port)
        s.send(http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [1, 2], requestID: 7)))
        let first = try #require(responses(s, 1).responses.first)
        #expect(first.status == 200)
        #expect(first.header("content-type") == Wire.contentType)
        #expect(first.header("content-length") == String(first.body.count), "a reply ready at once has a length")
        let ack = try decodeFrames(first.body)
        #expect(ack.map(\.requestID) == [7] && ack.first?.outcomes == [.accepted, .accepted])
        // Keep-alive: the same connection takes the next request; a re-send is harmless.
        s.send(http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [2, 3], requestID: 8)))
        let second = try #require(responses(s, 1).responses.first)
        #expect(try decodeFrames(second.body).first?.outcomes == [.alreadyEntered, .accepted])
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 3)
        await f.stop()
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let s = try RawSocket(port: f.server.port)
        // Three requests in one write: entries, a read, entries again.
        s.send(
            http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [10], requestID: 1))
                + http1("GET", "/v1/raffles/\(raffle)")
                + http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [10, 11], requestID: 2)))
        // The GET is answered by a task (the ledger's admin calls are async): read off the shared pool.
        nonisolated(unsafe) let socket = s
        let got = await offPool { responses(socket, 3).responses }
        #expect(got.map(\.status) == [200, 200, 200])
        guard got.count == 3 else { return }
        #expect(try decodeFrames(got[0].body).first?.requestID == 1)
        #expect(try JSONDecoder().decode(RaffleInfo.self, from: Data(got[1].body)).id == raffle)
        #expect(try decodeFrames(got[2].body).first?.outcomes == [.alreadyEntered, .accepted])
        await f.stop()
    }

    @Test func chunkedBodyWithFramesSplitAcrossChunksStreamsItsAcks() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let s = try RawSocket(port: f.server.port)
        let frames = (1...3).map { batchFrame(raffle: raffle, users: [UInt64($0) * 100, UInt64($0) * 100 + 1], requestID: UInt64($0)) }
        let all = frames.flatMap { $0 }
        // The head and the first frame and a half; the response starts before the body ends.
        let cut = frames[0].count + 9
        s.send(http1("POST", "/v1/entries", headers: [framesType], chunked: true) + chunk(Array(all[..<cut])))
        let early = s.readBytes(for: 3) { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }
        let head = String(decoding: early.bytes, as: UTF8.self)
        #expect(head.hasPrefix("HTTP/1.1 200"), "the status follows the first reply, sent before the body ends")
        #expect(head.lowercased().contains("transfer-encoding: chunked"))
        s.send(chunk(Array(all[cut...])) + chunk([]))
        let rest = s.readBytes(for: 3) { HTTP1Response.parseAll(early.bytes + $0).count >= 1 }
        let response = try #require(HTTP1Response.parseAll(early.bytes + rest.bytes).first)
        #expect(try decodeFrames(response.body).map(\.requestID) == [1, 2, 3])
        await f.stop()
    }

    @Test func wrongMethodContentTypeAndEmptyBodyAreAnsweredAsOnHTTP2() async throws {
        let f = try await ServerFixture.start()
        let s = try RawSocket(port: f.server.port)
        s.send(http1("GET", "/v1/entries"))
        s.send(http1("POST", "/v1/entries", headers: [("content-type", "application/json")], body: [1, 2, 3]))
        s.send(http1("POST", "/v1/entries", headers: [("content-type", "Application/VND.raffled.frames; v=1")]))
        let got = responses(s, 3).responses
        #expect(got.map(\.status) == [405, 415, 400])
        guard got.count == 3 else { return }
        #expect(try decodeFrames(got[1].body).first?.errorCode == .badContentType)
        #expect(try decodeFrames(got[2].body).first?.errorCode == .truncatedFrame, "media types are case-insensitive; the body is empty")
        // A body that ends inside a frame whose header arrived: TRUNCATED_FRAME with that frame's id.
        let cut = Array(batchFrame(raffle: 1, users: [1, 2], requestID: 77).dropLast(7))
        s.send(http1("POST", "/v1/entries", headers: [framesType], body: cut))
        let truncated = try #require(responses(s, 1).responses.first)
        let frame = try decodeFrames(truncated.body).first
        #expect(truncated.status == 400 && frame?.errorCode == .truncatedFrame && frame?.requestID == 77)
        await f.stop()
    }

    @Test func malformedRequestsGet400AndTheServerGoesOn() async throws {
        let f = try await ServerFixture.start { $0.maxHeaderFields = 8 }
        for bad in [
            Array("NOT-HTTP\r\n\r\n".utf8),
            Array("GET /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".utf8),
            http1("GET", "/healthz", headers: (0..<20).map { ("x-h\($0)", "v") }),
        ] {
            let s = try RawSocket(port: f.server.port)
            s.send(bad)
            let (got, closed) = responses(s, 1)
            #expect(got.first?.status == 400, "\(String(decoding: bad.prefix(20), as: UTF8.self))")
            #expect(closed || s.readBytes(for: 2).closed, "the connection is closed after a protocol error")
        }
        let s = try RawSocket(port: f.server.port)
        s.send(http1("GET", "/healthz"))
        #expect(responses(s, 1).responses.first?.status == 200)
        await f.stop()
    }

    @Test func connectionCloseExpectContinueAndOversizeAdminBodies() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let s = try RawSocket(port: f.server.port)
        s.send(http1("POST", "/v1/entries", headers: [framesType, ("expect", "100-continue")], body: batchFrame(raffle: raffle, users: [5], requestID: 3)))
        let got = responses(s, 1).responses
        #expect(got.first?.status == 100 && got.last?.status == 200)
        s.send(http1("POST", "/v1/raffles", headers: [testAdminHeader], body: Array(repeating: 0x20, count: 70_000)))
        #expect(responses(s, 1).responses.last?.status == 413)
        s.send(http1("GET", "/healthz", headers: [("connection", "close")]))
        let (last, closed) = responses(s, 1)
        #expect(last.first?.header("connection") == "close")
        #expect(closed || s.readBytes(for: 2).closed)
        await f.stop()
    }

    @Test func throttledAnswersCarryRetryAfter() async throws {
        let f = try await ServerFixture.start { $0.admission.anonymous = RateLimit(ratePerSecond: 10, burst: 4) }
        let raffle = try await f.createRaffle()
        let s = try RawSocket(port: f.server.port)
        s.send(http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [1, 2, 3], requestID: 1)))
        s.send(http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [4, 5, 6], requestID: 2)))
        let got = responses(s, 2).responses
        #expect(got.map(\.status) == [200, 429])
        #expect(got.last?.header("retry-after") == "1")
        #expect(got.last?.header("ratelimit-policy") != nil)
        if case .throttled(let ms, _)? = try decodeFrames(got.last?.body ?? []).first?.body { #expect(ms > 0) } else { Issue.record("no throttled frame") }
        await f.stop()
    }

    @Test func aHeadDribbledPastTheTimeoutIsCutOff() async throws {
        let f = try await ServerFixture.start { $0.requestHeadTimeoutMilliseconds = 300 }
        let s = try RawSocket(port: f.server.port)
        s.send(Array("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n".utf8))  // never finished
        #expect(s.readBytes(for: 5).closed, "slowloris: the connection closes")
        // A client that takes its time between requests but sends each head at once is served.
        let ok = try RawSocket(port: f.server.port)
        ok.send(http1("GET", "/healthz"))
        #expect(responses(ok, 1).responses.first?.status == 200)
        await f.stop()
    }
}
