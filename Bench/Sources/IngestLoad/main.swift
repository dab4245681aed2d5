// IngestLoad: durable batched ingest with unique entries, against a running raffled.
//
//   IngestLoad HOST PORT [connections=4] [inflight-per-connection=8] [batch=1000] [entries=2000000]
//
// Creates a raffle sized for the run (`expectedEntries`, so its dedupe index is allocated once, as a
// partner's bulk raffle would be), then sends batches of fresh user ids over `connections` HTTP/2 connections with
// `inflight` requests in flight on each, and reports acknowledged entries per second. Every ack is
// checked: all entries must come back accepted (fresh ids), or the run fails.
import Foundation
import NIOCore
import NIOPosix
import RaffleHTTP2
import RaffleHTTP2Client
import RaffleWire
import Synchronization

let args = CommandLine.arguments
guard args.count >= 3, let port = Int(args[2]) else {
    print("usage: IngestLoad HOST PORT [connections] [inflight] [batch] [entries]")
    exit(2)
}
let host = args[1]
let connections = args.count > 3 ? Int(args[3]) ?? 4 : 4
let inflight = args.count > 4 ? Int(args[4]) ?? 8 : 8
let batch = args.count > 5 ? Int(args[5]) ?? 1_000 : 1_000
let total = args.count > 6 ? Int(args[6]) ?? 2_000_000 : 2_000_000

let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let first = try await HTTP2Client.connect(host: host, port: port, group: group)
// Creating a raffle is an admin call: the key comes from $RAFFLE_ADMIN_KEY (raffled's DATA/admin.key).
let adminKey = ProcessInfo.processInfo.environment["RAFFLE_ADMIN_KEY"] ?? ""
let created = try await first.request(
    method: "POST", path: "/v1/raffles", headers: [("authorization", "Bearer " + adminKey)], body: Array(#"{"title":"ingest","durationSeconds":86400,"expectedEntries":\#(total)}"#.utf8))
guard created.status == 201, let text = created.body.getString(at: created.body.readerIndex, length: created.body.readableBytes),
    let idRange = text.range(of: #""id":"#), let raffle = UInt64(text[idRange.upperBound...].drop { $0 == "\"" }.prefix { $0.isNumber })  // ids are JSON strings
else {
    print("cannot create a raffle: HTTP \(created.status) \(String(buffer: created.body))")
    exit(1)
}
var clients = [first]
for _ in 1..<connections { clients.append(try await HTTP2Client.connect(host: host, port: port, group: group)) }

final class Counters: Sendable {
    let next = Atomic<Int>(0)
    let acked = Atomic<Int>(0)
    let wrong = Atomic<Int>(0)
}
let counters = Counters()
let batches = total / batch
let start = ContinuousClock.now
await withTaskGroup(of: Void.self) { tasks in
    for client in clients {
        for _ in 0..<inflight {
            tasks.addTask {
                while true {
                    let n = counters.next.add(1, ordering: .relaxed).oldValue
                    guard n < batches else { return }
                    let base = UInt64(n * batch + 1)
                    let entries = (0..<batch).map { Entry(userID: base + UInt64($0)) }
                    let body = (try? FrameEncoder.encode(Frame(requestID: UInt64(n), body: .entryBatch(raffleID: raffle, entries: entries)))) ?? []
                    guard let response = try? await client.request(
                        method: "POST", path: Wire.entriesPath, headers: [("content-type", Wire.contentType)], body: body)
                    else {
                        counters.wrong.add(batch, ordering: .relaxed)
                        continue
                    }
                    let accepted = response.body.withUnsafeReadableBytes { raw -> Int in
                        guard let view = try? FrameDecoder(receiver: .client).decode(raw), case .batchAck(let ack) = view.payload else { return 0 }
                        return ack.acceptedCount
                    }
                    counters.acked.add(accepted, ordering: .relaxed)
                    if accepted != batch { counters.wrong.add(batch - accepted, ordering: .relaxed) }
                }
            }
        }
    }
}
let elapsed = ContinuousClock.now - start
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let acked = counters.acked.load(ordering: .relaxed)
print(String(format: "ingest: %d entries acknowledged in %.2f s = %.0f entries/s (%d connections x %d in flight, batches of %d); not accepted: %d",
             acked, seconds, Double(acked) / seconds, connections, inflight, batch, counters.wrong.load(ordering: .relaxed)))
for client in clients { await client.close() }
try await group.shutdownGracefully()
exit(counters.wrong.load(ordering: .relaxed) == 0 ? 0 : 1)
