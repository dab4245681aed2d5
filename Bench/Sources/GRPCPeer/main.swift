// grpc-peer: the raffle ledger behind grpc-swift-2 + protobuf — the server a Swift team would write
// instead of raffled — for the side-by-side comparison in Bench/scripts/compare.sh.
//
//   grpc-peer --port 0 --data DIR [--durability fsync|none]
//
// Same ledger (RaffleLedger.LocalLedger: the dedupe index and the group-commit log), same durability
// (a reply is sent only once the batch is on disk); only the front differs: gRPC over
// swift-nio-http2 and protobuf messages instead of libnghttp2 and raffled's frames. Each request's
// entries are copied into the ledger's batch format, as any protobuf front end must.
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import RaffleCore
import RaffleLedger
import RaffleStorage
import RaffleWire
import Synchronization

/// Waiters for the log's group commit, resumed from the ledger's commit listener.
final class CommitWaiters: Sendable {
    private let waiters = Mutex<[(lsn: UInt64, continuation: CheckedContinuation<Bool, Never>)]>([])
    private let ledger: LocalLedger

    init(ledger: LocalLedger) {
        self.ledger = ledger
        ledger.onCommit { [weak self] result in self?.committed(result) }
    }

    /// Returns once `point` is durable (true), or the log failed (false).
    func wait(for point: CommitPoint) async -> Bool {
        if ledger.isDurable(point) { return true }
        return await withCheckedContinuation { continuation in
            let now = waiters.withLock { w -> Bool in
                if ledger.isDurable(point) { return true }
                w.append((point.lsn, continuation))
                return false
            }
            if now { continuation.resume(returning: true) }
        }
    }

    private func committed(_ result: Result<CommitPoint, LedgerError>) {
        let ready = waiters.withLock { w -> [(UInt64, CheckedContinuation<Bool, Never>)] in
            let durable = { (lsn: UInt64) in self.ledger.isDurable(CommitPoint(lsn: lsn)) }
            var out: [(UInt64, CheckedContinuation<Bool, Never>)] = []
            w.removeAll { item in
                let done: Bool
                switch result {
                case .success: done = durable(item.lsn)
                case .failure: done = true
                }
                if done { out.append((item.lsn, item.continuation)) }
                return done
            }
            return out
        }
        let ok: Bool
        switch result {
        case .success: ok = true
        case .failure: ok = false
        }
        for (_, c) in ready { c.resume(returning: ok) }
    }
}

struct RaffleService: Raffle_V1_Raffle.SimpleServiceProtocol {
    let ledger: LocalLedger
    let commits: CommitWaiters

    func enter(request: Raffle_V1_EntryBatch, context: ServerContext) async throws -> Raffle_V1_BatchAck {
        let n = request.entries.count
        guard n > 0 else { throw RPCError(code: .invalidArgument, message: "a batch needs at least one entry") }
        // The ledger takes its own batch format: copy the protobuf entries into it.
        let frame: [UInt8]
        do {
            frame = try FrameEncoder.encode(Frame(
                requestID: 0, body: .entryBatch(raffleID: request.raffleID, entries: request.entries.map { Entry(userID: $0.userID, tickets: $0.tickets) })))
        } catch {
            throw RPCError(code: .invalidArgument, message: "\(error)")
        }
        let outcomes = UnsafeMutableBufferPointer<EntryOutcome>.allocate(capacity: n)
        defer { outcomes.deallocate() }
        let admission: Admission? = frame.withUnsafeBytes { raw in
            guard let view = try? FrameDecoder(receiver: .server).decode(raw), case .entryBatch(let batch) = view.payload else { return nil }
            return ledger.admit(batch, now: Int64(Date().timeIntervalSince1970 * 1000), outcomes: outcomes)
        }
        switch admission {
        case .processed(let accepted, let commit):
            var ack = Raffle_V1_BatchAck()
            ack.raffleID = request.raffleID
            ack.accepted = UInt32(accepted)
            ack.outcomes = outcomes.map { UInt32($0.rawValue) }
            guard await commits.wait(for: commit) else { throw RPCError(code: .unavailable, message: "the log failed") }
            return ack
        case .unknownRaffle:
            throw RPCError(code: .notFound, message: "raffle \(request.raffleID) does not exist")
        case .unavailable(let message):
            throw RPCError(code: .unavailable, message: message)
        case nil:
            throw RPCError(code: .invalidArgument, message: "invalid batch")
        }
    }

    func createRaffle(request: Raffle_V1_CreateRaffleRequest, context: ServerContext) async throws -> Raffle_V1_CreateRaffleReply {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let spec = RaffleSpec(title: request.title, opensAt: now, closesAt: now + max(request.durationSeconds, 1) * 1000)
        switch ledger.createRaffle(spec, now: now) {
        case .success(let (info, commit)):
            _ = await commits.wait(for: commit)
            var reply = Raffle_V1_CreateRaffleReply()
            reply.id = info.id
            return reply
        case .failure(let error):
            throw RPCError(code: .invalidArgument, message: error.message)
        }
    }
}

var port = 0
var data = "./grpc-peer-data"
var durability = Durability.fsync
var args = CommandLine.arguments.dropFirst().makeIterator()
while let arg = args.next() {
    switch arg {
    case "--port": port = Int(args.next() ?? "") ?? 0
    case "--data": data = args.next() ?? data
    case "--durability": durability = args.next() == "none" ? .none : .fsync
    default:
        print("usage: grpc-peer [--port N] [--data DIR] [--durability fsync|none]")
        exit(2)
    }
}
let ledger = try LocalLedger(directory: data, durability: durability)
let service = RaffleService(ledger: ledger, commits: CommitWaiters(ledger: ledger))
let server = GRPCServer(
    transport: .http2NIOPosix(address: .ipv4(host: "127.0.0.1", port: port), transportSecurity: .plaintext),
    services: [service])
try await withThrowingDiscardingTaskGroup { group in
    group.addTask { try await server.serve() }
    if let address = try await server.listeningAddress {
        FileHandle.standardOutput.write(Data("grpc-peer listening on \(address), data in \(data), durability \(durability.rawValue)\n".utf8))
    }
}
