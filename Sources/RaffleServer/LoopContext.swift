import NIOCore
import RaffleAdmission
import RaffleLedger
import RaffleWire

/// A connection on a loop (HTTP/2, raw TCP, or a loop's UDP socket): woken after commits, told
/// when the server shuts down.
protocol LoopConnection: AnyObject {
    /// The log committed (or failed): release what became durable.
    func durabilityAdvanced()
    /// Stop taking new work; close once what was taken is answered.
    func beginShutdown()
}

/// State shared by every connection on one event loop, owned by that loop (never touched from
/// another thread): the preallocated ingest buffers, the outcome scratch buffer, and the connections
/// waiting for the log to commit.
final class LoopContext {
    let ledger: any Ledger
    let admission: AdmissionController
    let configuration: ServerConfiguration
    let metrics: ServerMetrics
    let decoder: FrameDecoder
    let eventLoop: any EventLoop

    /// Preallocated at start-up: `slotCount` buffers of `slotBytes` for bodies that arrive in pieces.
    /// Memory is reserved, not touched, so idle RSS stays small.
    let slotBytes: Int
    private let slab: UnsafeMutableRawPointer
    private var freeSlots: [Int32]
    /// One outcome per entry of the batch being admitted (reused for every batch on this loop).
    let outcomes: UnsafeMutableBufferPointer<EntryOutcome>

    /// Connections with replies waiting for the log; woken after each commit.
    private var waiting: [ObjectIdentifier: any LoopConnection] = [:]
    /// Latest durable point seen, and whether the log has failed.
    private(set) var durable = CommitPoint(lsn: 0)
    private(set) var failure: String?
    private(set) var shuttingDown = false

    init(
        eventLoop: any EventLoop, ledger: any Ledger, admission: AdmissionController, configuration: ServerConfiguration,
        metrics: ServerMetrics, slotCount: Int
    ) {
        self.eventLoop = eventLoop
        self.ledger = ledger
        self.admission = admission
        self.configuration = configuration
        self.metrics = metrics
        decoder = FrameDecoder(limits: configuration.frameLimits, receiver: .server)
        slotBytes = configuration.ingestSlotBytes
        let count = max(slotCount, 1)
        slab = .allocate(byteCount: count * slotBytes, alignment: 4_096)
        freeSlots = (0..<Int32(count)).reversed()
        outcomes = .allocate(capacity: max(configuration.frameLimits.maxEntriesPerBatch, 1))
        outcomes.initialize(repeating: .accepted)
    }

    deinit {
        slab.deallocate()
        outcomes.deallocate()
    }

    /// Takes an ingest buffer, or nil when all are in use (the caller throttles).
    func takeSlot() -> Int32? { freeSlots.popLast() }

    /// Returns an ingest buffer.
    func giveBack(_ slot: Int32) { freeSlots.append(slot) }

    /// The memory of buffer `slot`.
    func memory(of slot: Int32) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: slab + Int(slot) * slotBytes, count: slotBytes)
    }

    func isDurable(_ point: CommitPoint) -> Bool {
        if point <= durable { return true }
        if ledger.isDurable(point) {
            durable = point
            return true
        }
        return false
    }

    /// Open connections on this loop (for graceful shutdown).
    private(set) var connections: [ObjectIdentifier: any LoopConnection] = [:]

    func register(_ connection: any LoopConnection) { connections[ObjectIdentifier(connection)] = connection }
    func unregister(_ connection: any LoopConnection) { connections[ObjectIdentifier(connection)] = nil }

    /// Counts the outcomes a ledger decided at commit (the first `count` of `outcomes`).
    func recordDeferredOutcomes(count: Int) {
        var accepted = 0, duplicates = 0
        for outcome in outcomes[0..<count] {
            if outcome == .accepted { accepted += 1 } else if outcome == .alreadyEntered { duplicates += 1 }
        }
        metrics.recordEntries(accepted: accepted, duplicates: duplicates, rejected: count - accepted - duplicates)
    }

    /// Registers `connection` to be woken on the next commit.
    func wait(_ connection: any LoopConnection) {
        waiting[ObjectIdentifier(connection)] = connection
    }

    func stopWaiting(_ connection: any LoopConnection) {
        waiting[ObjectIdentifier(connection)] = nil
    }

    /// Called on this loop after the log committed (or failed).
    func committed(_ result: Result<CommitPoint, LedgerError>) {
        switch result {
        case .success(let point): if point > durable { durable = point }
        case .failure(let error): failure = error.message
        }
        guard !waiting.isEmpty else { return }
        let woken = waiting
        waiting.removeAll(keepingCapacity: true)
        for connection in woken.values { connection.durabilityAdvanced() }
    }

    /// Graceful shutdown: every connection stops taking new streams and closes once answered.
    func beginShutdown() {
        shuttingDown = true
        for connection in connections.values { connection.beginShutdown() }
    }
}

/// What every connection handler on a loop does when it comes and goes: counted in the metrics,
/// registered for commits and shutdown, and a repeating timer on its loop for its timeouts.
struct ConnectionLifetime {
    private var timer: RepeatedTask?
    /// `end` has run.
    private(set) var ended = false

    /// Counts and registers `connection`, and calls `tick` on it every `period` until `end`.
    mutating func begin<C: LoopConnection>(
        _ connection: C, loop: LoopContext, on eventLoop: any EventLoop, every period: TimeAmount, tick: @escaping @Sendable (C) -> Void
    ) {
        loop.register(connection)
        loop.metrics.connectionsOpened.increment()
        loop.metrics.connections.increment()
        let bound = NIOLoopBound(connection, eventLoop: eventLoop)
        timer = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in tick(bound.value) }
    }

    /// Stops the timer and forgets `connection`; false if it had ended already.
    mutating func end(_ connection: some LoopConnection, loop: LoopContext) -> Bool {
        guard !ended else { return false }
        ended = true
        timer?.cancel()
        timer = nil
        loop.stopWaiting(connection)
        loop.unregister(connection)
        loop.metrics.connections.decrement()
        return true
    }
}
