import Foundation
import NIOCore
import RaffleCore
import RaffleHTTP2
import RaffleLedger
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("Entry path, end to end on 127.0.0.1", .timeLimit(.minutes(1)))
struct EntryPathTests {
    @Test func entriesAreAcceptedOnceAndAcknowledgedInOrder() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let body = batchFrame(raffle: raffle, users: [1, 2, 1], requestID: 10)
            + (try FrameEncoder.encode(Frame(requestID: 11, body: .ping(99))))
            + batchFrame(raffle: raffle, users: [2, 3], requestID: 12)
        let (status, frames, response) = try await f.post(body)
        #expect(status == 200)
        #expect(response.header("content-type") == Wire.contentType)
        #expect(frames.map(\.requestID) == [10, 11, 12], "one reply per frame, in order")
        #expect(frames[0].outcomes == [.accepted, .accepted, .alreadyEntered])
        #expect(frames[1].body == .pong(99))
        #expect(frames[2].outcomes == [.alreadyEntered, .accepted])
        // A re-sent batch is harmless.
        let (_, again, _) = try await f.post(batchFrame(raffle: raffle, users: [1, 2, 3], requestID: 13))
        #expect(again.first?.outcomes == [.alreadyEntered, .alreadyEntered, .alreadyEntered])
        let info = try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self)
        #expect(info.entries == 3)
        #expect(f.server.ledger.backlog().pending == 0, "acknowledged means durable: nothing appended is waiting for the log")
        await f.stop()
    }

    @Test func badFramesGetTheirErrorsWhileOtherStreamsCarryOn() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        async let bad = f.post(Array("GET / HTTP/1.1\r\n\r\n and more bytes".utf8))
        async let good = f.post(batchFrame(raffle: raffle, users: [7], requestID: 1))
        var unknownType = [UInt8](repeating: 0, count: 24 + 8)
        unknownType[0] = 0x52; unknownType[1] = 0x46; unknownType[2] = 1; unknownType[3] = 0x7F; unknownType[8] = 8; unknownType[12] = 5
        async let mixed = f.post(unknownType + batchFrame(raffle: raffle, users: [8], requestID: 6))
        let (badStatus, badFrames, _) = try await bad
        #expect(badStatus == 400)
        #expect(badFrames.map(\.errorCode) == [.badMagic])
        let (goodStatus, goodFrames, _) = try await good
        #expect(goodStatus == 200 && goodFrames.first?.outcomes == [.accepted])
        let (mixedStatus, mixedFrames, _) = try await mixed
        #expect(mixedStatus == 400, "the status follows the first reply")
        #expect(mixedFrames.map(\.requestID) == [5, 6])
        #expect(mixedFrames.first?.errorCode == .unknownFrameType)
        #expect(mixedFrames.last?.outcomes == [.accepted], "a frame-level error does not stop the stream")
        await f.stop()
    }

    @Test func requestErrorsMapToTheirStatusCodes() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let (s404, unknown, _) = try await f.post(batchFrame(raffle: raffle + 100, users: [1], requestID: 3))
        #expect(s404 == 404 && unknown.first?.errorCode == .unknownRaffle && unknown.first?.requestID == 3)
        let (s415, wrongType, _) = try await f.post(batchFrame(raffle: raffle, users: [1], requestID: 4), contentType: "application/json")
        #expect(s415 == 415 && wrongType.first?.errorCode == .badContentType)
        let (sCase, cased, _) = try await f.post(batchFrame(raffle: raffle, users: [99], requestID: 4), contentType: "Application/VND.Raffled.Frames ; v=1")
        #expect(sCase == 200 && cased.first?.outcomes == [.accepted], "media types are case-insensitive, parameters ignored")
        let get = try await f.client.request(method: "GET", path: Wire.entriesPath)
        #expect(get.status == 405)
        let full = batchFrame(raffle: raffle, users: [1, 2], requestID: 5)
        let (s400, truncated, _) = try await f.post(Array(full.dropLast(7)))
        #expect(s400 == 400 && truncated.first?.errorCode == .truncatedFrame)
        #expect(truncated.first?.requestID == 5, "the cut frame's header arrived whole: its request id")
        let (sEmpty, empty, _) = try await f.post([])
        #expect(sEmpty == 400 && empty.first?.errorCode == .truncatedFrame)
        var huge = batchFrame(raffle: raffle, users: [1], requestID: 6)
        huge[8] = 0xFF; huge[9] = 0xFF; huge[10] = 0xFF  // announces ~16 MiB
        let (s413, tooLarge, _) = try await f.post(huge)
        #expect(s413 == 413 && tooLarge.first?.errorCode == .frameTooLarge)
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 1, "only user 99, whose request was valid")
        await f.stop()
    }

    @Test func closedAndNotYetOpenRaffles() async throws {
        let f = try await ServerFixture.start()
        let future = Int64(Date().timeIntervalSince1970 * 1000) + 3_600_000
        let body = #"{"title":"Later","opensAt":\#(future),"durationSeconds":60}"#
        let created = try await f.admin("POST", "/v1/raffles", body: Array(body.utf8))
        let later = try JSONDecoder().decode(RaffleInfo.self, from: Data(created.body.readableBytesView))
        #expect(later.state == .scheduled)
        #expect(try await f.post(batchFrame(raffle: later.id, users: [1], requestID: 1)).1.first?.outcomes == [.raffleNotOpen])
        let now = try await f.createRaffle()
        let closed = try await f.admin("POST", "/v1/raffles/\(now)/close")
        #expect(closed.status == 200)
        #expect(try await f.post(batchFrame(raffle: now, users: [1], requestID: 2)).1.first?.outcomes == [.raffleClosed])
        await f.stop()
    }

    @Test func bulkPartnerStreamsBatchesOnOneLongLivedStream() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let stream = try await f.client.openStream(path: Wire.entriesPath, headers: [("content-type", Wire.contentType)])
        var received: [UInt8] = []
        var iterator = stream.chunks.makeAsyncIterator()
        for round in 0..<5 {
            let batch = batchFrame(raffle: raffle, users: (0..<1_000).map { UInt64(round * 1_000 + $0 + 1) }, requestID: UInt64(round))
            // Split each batch in uneven pieces so frames straddle DATA frames.
            stream.write(Array(batch[..<333]))
            stream.write(Array(batch[333...]))
            // The ack for this batch arrives on the same stream before the next batch is sent.
            while (try? decodeFrames(received).count) ?? 0 < round + 1 {
                guard let chunk = await iterator.next() else { break }
                received += Array(buffer: chunk)
            }
        }
        stream.write([], end: true)
        while let chunk = await iterator.next() { received += Array(buffer: chunk) }
        let frames = try decodeFrames(received)
        #expect(frames.map(\.requestID) == [0, 1, 2, 3, 4])
        #expect(frames.allSatisfy { $0.outcomes?.allSatisfy { $0 == .accepted } == true })
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 5_000)
        await f.stop()
    }

    @Test func exhaustedIngestBuffersThrottleInsteadOfGrowing() async throws {
        let f = try await ServerFixture.start { config in
            config.eventLoops = 1
            config.ingestBufferBytes = 1  // one buffer in all
        }
        let raffle = try await f.createRaffle()
        let holder = try await f.client.openStream(path: Wire.entriesPath, headers: [("content-type", Wire.contentType)])
        let batch = batchFrame(raffle: raffle, users: [1, 2, 3], requestID: 1)
        holder.write(Array(batch[..<30]))  // a partial frame: takes the only buffer
        _ = try await f.client.request(method: "GET", path: "/healthz")  // make sure it arrived
        let second = try await f.client.openStream(path: Wire.entriesPath, headers: [("content-type", Wire.contentType)])
        second.write(Array(batchFrame(raffle: raffle, users: [9], requestID: 77)[..<30]))
        #expect(try await second.status() == 429)
        var bytes: [UInt8] = []
        for await chunk in second.chunks { bytes += Array(buffer: chunk) }
        let frames = try decodeFrames(bytes)
        #expect(frames.first?.body == .throttled(retryAfterMilliseconds: 50, reason: .serverBusy))
        #expect(frames.first?.requestID == 77)
        // The first stream completes normally once the rest arrives.
        holder.write(Array(batch[30...]), end: true)
        var first: [UInt8] = []
        for await chunk in holder.chunks { first += Array(buffer: chunk) }
        #expect(try decodeFrames(first).first?.outcomes == [.accepted, .accepted, .accepted])
        await f.stop()
    }

    @Test func retryAfterHeaderIsWholeSecondsRoundedUp() async throws {
        let f = try await ServerFixture.start { config in
            config.eventLoops = 1
            config.ingestBufferBytes = 1
            config.busyRetryAfterMilliseconds = 1_500
        }
        let raffle = try await f.createRaffle()
        let holder = try await f.client.openStream(path: Wire.entriesPath, headers: [("content-type", Wire.contentType)])
        holder.write(Array(batchFrame(raffle: raffle, users: [1], requestID: 1)[..<30]))
        _ = try await f.client.request(method: "GET", path: "/healthz")
        let (status, frames, response) = try await f.post(Array(batchFrame(raffle: raffle, users: [2], requestID: 2)[..<40]))
        #expect(status == 429)
        #expect(response.header("retry-after") == "2")
        #expect(frames.first?.body == .throttled(retryAfterMilliseconds: 1_500, reason: .serverBusy))
        holder.write([], end: true)
        await f.stop()
    }

    @Test func durabilityNoneIsNamedInTheResponse() async throws {
        let f = try await ServerFixture.start(durability: .none)
        let raffle = try await f.createRaffle()
        let (_, _, response) = try await f.post(batchFrame(raffle: raffle, users: [1], requestID: 1))
        #expect(response.header("raffled-durability") == "none")
        let health = try await f.client.request(method: "GET", path: "/healthz")
        #expect(String(buffer: health.body).contains("\"durability\":\"none\""))
        await f.stop()
    }
}
