import Foundation
import NIOCore
@testable import RaffleHTTP2
@testable import RaffleServer
import RaffleCore
import RaffleTestSupport
import RaffleWire
import Testing

/// nghttp2's per-session allocator: free lists per 64-byte class, bounded, and a real session on it.
@Suite("SessionAllocator")
struct SessionAllocatorTests {
    @Test func aFreedBlockIsHandedOutAgainForAnySizeInItsClass() throws {
        let a = SessionAllocator(limit: 4096)
        let p = try #require(a.allocate(100))
        a.free(p)
        #expect(a.cachedBytes == 128, "100 bytes is the 128-byte class")
        let q = try #require(a.allocate(65))
        #expect(q == p && a.reused == 1 && a.cachedBytes == 0)
        let r = try #require(a.allocate(64))
        #expect(r != p && a.fresh == 2, "64 bytes is another class")
        a.free(q)
        a.free(r)
        a.free(nil)
    }

    @Test func whatIsKeptStaysUnderTheLimitAndTrimEmptiesIt() throws {
        let a = SessionAllocator(limit: 256)
        let blocks = try (0..<10).map { _ in try #require(a.allocate(64)) }
        for b in blocks { a.free(b) }
        #expect(a.cachedBytes == 256, "four 64-byte blocks kept, six handed back to malloc")
        a.trim()
        #expect(a.cachedBytes == 0)
        let block = try #require(a.allocate(64))
        a.free(block)
        let off = SessionAllocator(limit: 0)
        let p = try #require(off.allocate(10))
        off.free(p)
        #expect(off.cachedBytes == 0, "limit 0: nothing is kept")
        let exact = try #require(off.allocate(10))
        let moved = try #require(off.reallocate(exact, 11))
        #expect(moved != exact, "limit 0: blocks are their exact size (no class slack for ASan to miss), so one more byte moves it")
        off.free(moved)
        let pooled = try #require(a.allocate(10))
        #expect(a.reallocate(pooled, 11) == pooled, "pooled: a 64-byte class has room")
        a.free(pooled)
        let big = try #require(a.allocate(4096))
        a.free(big)
        #expect(a.cachedBytes == 64, "blocks over 2 KiB go straight back to malloc")
    }

    @Test func reallocKeepsContentsAndCallocZeroesReusedBlocks() throws {
        let a = SessionAllocator(limit: 1 << 16)
        let p = try #require(a.allocate(40))
        for i in 0..<40 { p.storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
        #expect(a.reallocate(p, 60) == p, "still inside its 64-byte class: the same block")
        let grown = try #require(a.reallocate(p, 3000))
        #expect((0..<40).allSatisfy { grown.load(fromByteOffset: $0, as: UInt8.self) == UInt8($0) })
        #expect(a.cachedBytes == 64, "the old block went back to its list")
        let bigger = try #require(a.reallocate(grown, 5000))
        #expect((0..<40).allSatisfy { bigger.load(fromByteOffset: $0, as: UInt8.self) == UInt8($0) }, "a large block's capacity is kept too")
        #expect(a.reallocate(bigger, 0) == nil)
        let fresh = try #require(a.reallocate(nil, 8))
        fresh.storeBytes(of: UInt64.max, as: UInt64.self)
        a.free(fresh)
        let zeroed = try #require(a.allocateZeroed(2, 4))
        #expect(zeroed == fresh && zeroed.load(as: UInt64.self) == 0, "a reused block comes back zeroed from calloc")
        #expect(a.allocateZeroed(Int.max, 2) == nil, "count × size overflowing is refused")
        a.free(zeroed)
    }

    /// A real exchange: the server's session reuses its blocks, keeps at most its limit, and hands
    /// them back once the connection has been quiet with no stream open.
    @Test func aServerSessionReusesItsBlocksAndTrimsThemWhenIdle() throws {
        let pair = try HandlerTests.Pair()
        defer { pair.finish() }
        let (info, _) = try pair.ledger.createRaffle(
            RaffleSpec(title: "t", opensAt: 0, closesAt: Int64.max / 2), now: Int64(Date().timeIntervalSince1970 * 1000)).get()
        for user in 1...20 {
            let response = pair.request(
                "POST", Wire.entriesPath, headers: [("content-type", Wire.contentType)],
                body: batchFrame(raffle: info.id, users: [UInt64(user)], requestID: UInt64(user)))
            try pair.pump()
            pair.commit()
            try pair.pump()
            #expect(try response.wait().status == 200)
        }
        let server = try pair.server.pipeline.syncOperations.handler(type: H2ServerConnection.self)
        let session = try #require(server.session)
        #expect(session.cachedMemoryBytes > 0 && session.cachedMemoryBytes <= HTTP2Session.Options().allocatorCacheBytes)
        server.checkTimeouts()
        #expect(session.cachedMemoryBytes > 0, "a connection active just now keeps its blocks")
        server.lastActivityNanos = monotonicNanoseconds() - 2_000_000_000
        server.checkTimeouts()
        #expect(session.cachedMemoryBytes == 0, "quiet for over a second with no stream open: trimmed")
    }
}
