@testable import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// The read-ahead index hint (`EntryPrefetcher`): it finds the entries frames nghttp2 is about to
/// hand over, in order, whatever the reads' boundaries, and passes over everything else.
@Suite("Entry prefetcher")
struct EntryPrefetcherTests {
    /// A client's first bytes: preface, SETTINGS, then requests — DATA frames holding entries
    /// frames (one padded), a DATA frame holding a ping, one holding an entries frame cut short,
    /// one holding a bulk batch (left to `admit`, which prefetches its own), and HEADERS between them. Returns the bytes, the first user of each whole entries frame in
    /// order, and where each of those DATA frames lies.
    func stream() -> ([UInt8], [UInt64], [Range<Int>]) {
        var bytes = ProtocolSelector.preface + RawHTTP2.settings([(3, 256)])
        var users: [UInt64] = []
        var spans: [Range<Int>] = []
        for i in 0..<7 {
            let stream = UInt32(2 * i + 1)
            bytes += RawHTTP2.frame(type: 1, flags: 4, stream: stream, [0x83, 0x86, 0x84, 0x41, 0x8A] + [UInt8](repeating: 0x20, count: 10))
            let user = UInt64(1_000 + i)
            let body = batchFrame(raffle: 7, users: [user, user + 500], requestID: UInt64(i + 1))
            let start = bytes.count
            switch i {
            case 2: bytes += RawHTTP2.frame(type: 0, flags: 0x8 | 0x1, stream: stream, [5] + body + [0, 0, 0, 0, 0])  // padded
            case 3: bytes += RawHTTP2.frame(type: 0, flags: 1, stream: stream, (try? FrameEncoder.encode(Frame(requestID: 9, body: .ping(3)))) ?? [])
            case 4: bytes += RawHTTP2.frame(type: 0, flags: 0, stream: stream, Array(body.prefix(body.count / 2)))  // the rest would follow
            case 5:
                let bulk = batchFrame(raffle: 7, users: UInt64(50_000)..<50_100, requestID: 99)
                #expect(bulk.count > EntryPrefetcher.largestPeek)
                bytes += RawHTTP2.frame(type: 0, flags: 1, stream: stream, bulk)
            default: bytes += RawHTTP2.frame(type: 0, flags: 1, stream: stream, body)
            }
            if i != 3 && i != 4 && i != 5 {
                users.append(user)
                spans.append(start..<bytes.count)
            }
        }
        return (bytes, users, spans)
    }

    func hints(_ reads: [ArraySlice<UInt8>]) -> [UInt64] {
        var prefetcher = EntryPrefetcher()
        let decoder = FrameDecoder(limits: .default, receiver: .server)
        var found: [UInt64] = []
        for read in reads {
            read.withUnsafeBytes { prefetcher.scan($0, decoder: decoder) { batch in
                #expect(batch.raffleID == 7 && batch.count == 2)
                found.append(batch.userID(at: 0))
            } }
        }
        return found
    }

    @Test func oneReadFindsEveryWholeEntriesFrameInOrder() {
        let (bytes, users, _) = stream()
        #expect(hints([bytes[...]]) == users)
    }

    /// Cut anywhere, the walk stays in step: only the DATA frame the cut falls in is passed over.
    @Test func aCutAnywhereLosesOnlyTheFrameItFallsIn() {
        let (bytes, users, spans) = stream()
        for cut in 1..<bytes.count {
            let expected = zip(users, spans).filter { !($0.1.lowerBound < cut && cut < $0.1.upperBound) }.map(\.0)
            let got = hints([bytes[..<cut], bytes[cut...]])
            #expect(got == expected, "cut at \(cut)")
        }
    }

    @Test func byteByByteFindsNothingAndKeepsInStep() {
        let (bytes, _, _) = stream()
        var reads = bytes.indices.map { bytes[$0...$0] }
        // Then one more whole request in a single read: found, so the walk kept its place.
        let more = RawHTTP2.frame(type: 0, flags: 1, stream: 99, batchFrame(raffle: 7, users: [77, 78], requestID: 50))
        reads.append(more[...])
        #expect(hints(reads) == [77])
    }
}
