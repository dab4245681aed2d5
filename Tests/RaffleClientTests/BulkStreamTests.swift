import Foundation
import Logging
import RaffleClient
import RaffleClientHTTP2
import RaffleCore
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Synchronization
import Testing

@Suite("BulkStream against a real raffled on 127.0.0.1", .timeLimit(.minutes(1)))
struct BulkStreamTests {
    static func start(port: Int = 0, data: TempDir) async throws -> RaffleServer {
        try await TestServer.start(in: data, port: port).0
    }

    static func batch(_ k: Int, size: Int) -> [Entry] {
        (0..<size).map { Entry(userID: UInt64(k * size + $0 + 1)) }
    }

    @Test func batchesShareOneStreamAndEachGetsItsOwnAck() async throws {
        let dir = TempDir()
        let s = try await Self.start(data: dir)
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.streamWindow = 3
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: config)
        let raffle = try await client.createRaffle(title: "Bulk", duration: .seconds(600))
        let stream = client.bulkStream(raffle: raffle.id)
        // One at a time first.
        #expect(try await stream.send(Self.batch(0, size: 10)) == Array(repeating: .accepted, count: 10))
        #expect(try await stream.send(Self.batch(0, size: 10)) == Array(repeating: .alreadyEntered, count: 10))
        // Then many at once: the window holds them back, each still gets its own outcomes.
        let source = BatchSource(first: 1, last: 30, size: 50)
        let seen = Tally()
        try await stream.send(batches: { source.next() }) { batch, outcomes in
            #expect(outcomes.count == 50 && outcomes.allSatisfy { $0 == .accepted })
            seen.acked.add(1, ordering: .relaxed)
            seen.peak.withLock { $0 = max($0, stream.inFlight) }
        }
        #expect(seen.acked.load(ordering: .relaxed) == 30)
        #expect(seen.peak.withLock { $0 } <= 3, "never more than the window in flight")
        #expect(stream.streamsOpened == 1, "one stream carried every batch")
        #expect(try await client.raffle(raffle.id).entries == 10 + 30 * 50)
        await stream.close()
        do {
            _ = try await stream.send(Self.batch(99, size: 1))
            Issue.record("a closed stream takes no batches")
        } catch {
            #expect(error.kind == .invalidRequest)
        }
        await client.transport.close()
        await s.shutdown()
    }

    @Test func nonRetryableErrorsFailOnlyTheirBatch() async throws {
        let dir = TempDir()
        let s = try await Self.start(data: dir)
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: .init(adminKey: testAdminKey))
        let raffle = try await client.createRaffle(title: "Bulk", duration: .seconds(600))
        let wrong = client.bulkStream(raffle: 424_242)
        do {
            _ = try await wrong.send(Self.batch(0, size: 3))
            Issue.record("unknown raffle")
        } catch {
            #expect(error.kind == .server(.unknownRaffle))
        }
        await wrong.close()
        let right = client.bulkStream(raffle: raffle.id)
        #expect(try await right.send(Self.batch(0, size: 3)).allSatisfy { $0 == .accepted })
        await right.close()
        await client.transport.close()
        await s.shutdown()
    }

    @Test func aServerRestartedMidStreamLosesAndDoublesNothing() async throws {
        let dir = TempDir()
        let first = try await Self.start(data: dir)
        let port = first.port
        let server = Mutex<RaffleServer?>(first)
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.streamWindow = 4
        config.backoff = Backoff(base: .milliseconds(20), cap: .milliseconds(200))
        config.deadline = .seconds(20)
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: port), configuration: config)
        let raffle = try await client.createRaffle(title: "Restart", duration: .seconds(600))
        let stream = client.bulkStream(raffle: raffle.id)
        let batches = 60, size = 100
        let tally = Tally()
        // The source holds back every batch from the 20th on until the server has been restarted, so
        // the stream is mid-way when its connection goes.
        let source = BatchSource(first: 0, last: batches - 1, size: size)
        let gate = Gate()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await stream.send(batches: {
                    guard let batch = source.next() else { return nil }
                    if batch[0].userID > UInt64(20 * size) { await gate.wait() }
                    return batch
                }) { batch, outcomes in
                    let k = Int((batch[0].userID - 1) / UInt64(size))
                    tally.results.withLock { $0[k] = outcomes }
                    tally.acked.add(1, ordering: .relaxed)
                }
            }
            // Restart the server while batches are in flight on the stream.
            // (Bounded: a stream that failed early ends the test with a message, not at its time limit.)
            let deadline = ContinuousClock.now + .seconds(30)
            while tally.acked.load(ordering: .relaxed) < 5 {
                guard ContinuousClock.now < deadline else {
                    Issue.record("no 5 batches acknowledged within 30 s before the restart (\(tally.acked.load(ordering: .relaxed)))")
                    gate.open()
                    group.cancelAll()
                    await stream.close()
                    await first.shutdown()
                    return
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            await first.shutdown(grace: .milliseconds(100))
            let second = try await Self.start(port: port, data: dir)
            server.withLock { $0 = second }
            gate.open()
            try await group.waitForAll()
        }
        #expect(stream.streamsOpened >= 2, "the stream was resumed on a new connection")
        let all = tally.results.withLock { $0 }
        #expect(all.count == batches, "every batch was answered")
        for (k, outcomes) in all {
            #expect(outcomes.count == size && outcomes.allSatisfy { $0 == .accepted || $0 == .alreadyEntered }, "batch \(k): \(outcomes)")
        }
        // Nothing lost, nothing doubled: exactly one entry per user survived the restart.
        let info = try await client.raffle(raffle.id)
        #expect(info.entries == UInt64(batches * size))
        let export = try await client.export(raffle.id)
        let users = export.split(separator: "\n").dropFirst().compactMap { UInt64($0.split(separator: ",").first ?? "") }
        #expect(users.count == batches * size && Set(users).count == batches * size)
        await stream.close()
        await client.transport.close()
        await server.withLock { $0 }?.shutdown()
    }
}

/// Outcomes collected from many tasks.
final class Tally: Sendable {
    let results = Mutex<[Int: [EntryOutcome]]>([:])
    let acked = Atomic<Int>(0)
    let peak = Mutex(0)
}

/// Hands out batches `first...last` of `size` users each, then nil (safe from many tasks).
final class BatchSource: Sendable {
    private let next_ = Atomic<Int>(0)
    let first: Int, last: Int, size: Int
    init(first: Int, last: Int, size: Int) {
        self.first = first
        self.last = last
        self.size = size
    }
    func next() -> [Entry]? {
        let k = first + next_.add(1, ordering: .relaxed).oldValue
        return k <= last ? BulkStreamTests.batch(k, size: size) : nil
    }
}

/// Holds tasks until `open()`.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }
}
