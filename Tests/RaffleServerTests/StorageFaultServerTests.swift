import Foundation
import RaffleServer
import RaffleStorage
import RaffleTestSupport
import RaffleWire
import Testing

/// What clients, probes and metrics see when the storage under a running server fails or fills up.
@Suite("Storage faults seen from outside", .timeLimit(.minutes(1)))
struct StorageFaultServerTests {
    func metrics(_ f: ServerFixture) async throws -> String {
        String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
    }

    func until(_ seconds: Double = 5, _ done: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
        while ContinuousClock.now < deadline {
            if try await done() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test func aFullDiskRefusesEntriesUntilSpaceReturns() async throws {
        let files = FaultyFileSystem()
        let f = try await ServerFixture.start(files: files)
        let raffle = try await f.createRaffle()
        files.space = 100
        // This batch is taken, then waits for space: its ack comes once the disk has room again.
        let waiting = Task { try await f.post(batchFrame(raffle: raffle, users: 1...20, requestID: 1)) }
        #expect(try await until { try await f.client.request(method: "GET", path: "/readyz").status == 503 })
        let ready = try await f.client.request(method: "GET", path: "/readyz")
        #expect(String(buffer: ready.body).contains("stalled"))
        #expect(try await metrics(f).contains("raffled_storage_stalled 1"))
        let (status, frames, response) = try await f.post(batchFrame(raffle: raffle, users: 100...101, requestID: 2))
        #expect(status == 503 && frames.first?.errorCode == .unavailable, "new entries: UNAVAILABLE while the disk is full")
        #expect(response.header("retry-after") == "1")
        files.space = nil
        let (firstStatus, firstFrames, _) = try await waiting.value
        #expect(firstStatus == 200 && firstFrames.first?.outcomes?.count == 20, "the waiting batch is acknowledged once written")
        #expect(try await until { try await f.client.request(method: "GET", path: "/readyz").status == 200 })
        #expect(try await metrics(f).contains("raffled_storage_stalled 0"))
        await f.stop()
    }

    @Test func aFailedSyncFailsReadinessAndIsCounted() async throws {
        let files = FaultyFileSystem()
        let f = try await ServerFixture.start(files: files)
        let raffle = try await f.createRaffle()
        files.failSyncs()
        let (status, frames, _) = try await f.post(batchFrame(raffle: raffle, users: 1...5, requestID: 1))
        #expect(status == 503 && frames.first?.errorCode == .unavailable, "never acknowledged")
        let ready = try await f.client.request(method: "GET", path: "/readyz")
        #expect(ready.status == 503 && String(buffer: ready.body).contains("fdatasync"))
        let health = try await f.client.request(method: "GET", path: "/healthz")
        #expect(String(buffer: health.body).contains("failing"))
        #expect(try await metrics(f).contains("raffled_storage_failures_total 1"))
        await f.stop()
    }
}
