import CoreMetrics
import Prometheus
import RaffleAdmission
import RaffleLedger
import RaffleWire
import Synchronization

/// The server's metrics, created once at start-up (never per request) through swift-metrics with a
/// per-server Prometheus registry, and rendered for `GET /metrics`.
final class ServerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    let entriesAccepted: CoreMetrics.Counter
    let entriesDuplicate: CoreMetrics.Counter
    let entriesRejected: CoreMetrics.Counter
    let batches: CoreMetrics.Counter
    let bytesReceived: CoreMetrics.Counter
    let frameErrors: CoreMetrics.Counter
    let throttledPoolExhausted: CoreMetrics.Counter
    let throttledRateLimited: CoreMetrics.Counter
    let throttledWaitingRoom: CoreMetrics.Counter
    let throttledServerBusy: CoreMetrics.Counter
    private let waitingRoomDepth: CoreMetrics.Gauge
    private let globalTokens: CoreMetrics.Gauge
    private let overloaded: CoreMetrics.Gauge
    let connectionsOpened: CoreMetrics.Counter
    /// Connections closed on arrival: their address was at its connection cap.
    let connectionsCapped: CoreMetrics.Counter
    /// Connections closed on arrival: their address opened new ones faster than its rate.
    let connectionsRateLimited: CoreMetrics.Counter
    /// HTTP/2 connections closed because the peer took no response bytes for the idle timeout.
    let slowReaders: CoreMetrics.Counter
    let connections: CoreMetrics.Meter
    let streams: CoreMetrics.Counter
    let goaways: CoreMetrics.Counter
    let udpDatagrams: CoreMetrics.Counter
    let udpDropped: CoreMetrics.Counter
    let ackLatency: CoreMetrics.Timer
    let logCommits: CoreMetrics.Counter
    /// Storage failures (the ledger stopped acknowledging for good): 0 or 1 per process.
    let storageFailures: CoreMetrics.Counter
    /// 1 while the ledger waits for disk space.
    let storageStalled: CoreMetrics.Gauge
    /// Checkpoints written, checkpoints that failed, and the size of the newest.
    let checkpoints: CoreMetrics.Counter
    let checkpointFailures: CoreMetrics.Counter
    let checkpointBytes: CoreMetrics.Gauge
    private let lastCommits = Atomic<UInt64>(0)
    private let entriesPerCommit: CoreMetrics.Gauge
    private let indexBytes: CoreMetrics.Gauge
    private let indexBytesPerEntry: CoreMetrics.Gauge
    private let logBacklog: CoreMetrics.Gauge
    private let durabilityInfo: CoreMetrics.Gauge
    private let acceptedTotal = Atomic<Int>(0)
    /// Entries answered in batch acks (any outcome), by transport (`EntryTransport.rawValue`).
    let acknowledged: [CoreMetrics.Counter]
    /// Bytes of log segments on disk.
    private let logDiskBytes: CoreMetrics.Gauge
    private let process: ProcessMetrics

    init(durability: String) {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .seconds(1),
        ]
        self.factory = factory
        entriesAccepted = Counter(label: "raffled_entries_total", dimensions: [("outcome", "accepted")], factory: factory)
        entriesDuplicate = Counter(label: "raffled_entries_total", dimensions: [("outcome", "already_entered")], factory: factory)
        entriesRejected = Counter(label: "raffled_entries_total", dimensions: [("outcome", "rejected")], factory: factory)
        batches = Counter(label: "raffled_batches_total", factory: factory)
        storageFailures = Counter(label: "raffled_storage_failures_total", factory: factory)
        storageStalled = Gauge(label: "raffled_storage_stalled", factory: factory)
        checkpoints = Counter(label: "raffled_checkpoints_total", factory: factory)
        checkpointFailures = Counter(label: "raffled_checkpoint_failures_total", factory: factory)
        checkpointBytes = Gauge(label: "raffled_checkpoint_bytes", factory: factory)
        bytesReceived = Counter(label: "raffled_entry_bytes_received_total", factory: factory)
        frameErrors = Counter(label: "raffled_frame_errors_total", factory: factory)
        throttledPoolExhausted = Counter(label: "raffled_throttled_total", dimensions: [("reason", "ingest_buffers_full")], factory: factory)
        throttledRateLimited = Counter(label: "raffled_throttled_total", dimensions: [("reason", "rate_limited")], factory: factory)
        throttledWaitingRoom = Counter(label: "raffled_throttled_total", dimensions: [("reason", "waiting_room")], factory: factory)
        throttledServerBusy = Counter(label: "raffled_throttled_total", dimensions: [("reason", "server_busy")], factory: factory)
        waitingRoomDepth = Gauge(label: "raffled_waiting_room_entries", factory: factory)
        globalTokens = Gauge(label: "raffled_global_bucket_tokens", factory: factory)
        overloaded = Gauge(label: "raffled_backpressure_engaged", factory: factory)
        connectionsOpened = Counter(label: "raffled_connections_total", factory: factory)
        slowReaders = Counter(label: "raffled_connections_closed_total", dimensions: [("reason", "slow_reader")], factory: factory)
        connectionsCapped = Counter(label: "raffled_connections_refused_total", dimensions: [("reason", "per_address_cap")], factory: factory)
        connectionsRateLimited = Counter(label: "raffled_connections_refused_total", dimensions: [("reason", "per_address_rate")], factory: factory)
        connections = Meter(label: "raffled_connections_open", factory: factory)
        streams = Counter(label: "raffled_streams_total", factory: factory)
        goaways = Counter(label: "raffled_goaway_enhance_your_calm_total", factory: factory)
        udpDatagrams = Counter(label: "raffled_udp_datagrams_total", dimensions: [("result", "received")], factory: factory)
        udpDropped = Counter(label: "raffled_udp_datagrams_total", dimensions: [("result", "dropped")], factory: factory)
        ackLatency = Timer(label: "raffled_ack_latency_seconds", factory: factory)
        logCommits = Counter(label: "raffled_log_fsyncs_total", dimensions: [("durability", durability)], factory: factory)
        entriesPerCommit = Gauge(label: "raffled_log_entries_per_fsync", dimensions: [("durability", durability)], factory: factory)
        indexBytes = Gauge(label: "raffled_index_bytes", factory: factory)
        indexBytesPerEntry = Gauge(label: "raffled_index_bytes_per_entry", factory: factory)
        logBacklog = Gauge(label: "raffled_log_unsynced_bytes", factory: factory)
        durabilityInfo = Gauge(label: "raffled_durability_info", dimensions: [("mode", durability)], factory: factory)
        durabilityInfo.record(1)
        acknowledged = EntryTransport.allCases.map {
            Counter(label: "raffled_entries_acknowledged_total", dimensions: [("transport", $0.label)], factory: factory)
        }
        logDiskBytes = Gauge(label: "raffled_log_bytes", factory: factory)
        process = ProcessMetrics(factory: factory)
    }

    /// Counts a batch's outcomes.
    func recordOutcomes(accepted: Int, duplicates: Int, rejected: Int, bytes: Int) {
        batches.increment()
        bytesReceived.increment(by: Int64(bytes))
        recordEntries(accepted: accepted, duplicates: duplicates, rejected: rejected)
    }

    /// Entries by outcome (a deferred batch's, counted when its ledger decides them).
    func recordEntries(accepted: Int, duplicates: Int, rejected: Int) {
        if accepted > 0 {
            entriesAccepted.increment(by: Int64(accepted))
            acceptedTotal.add(accepted, ordering: .relaxed)
        }
        if duplicates > 0 { entriesDuplicate.increment(by: Int64(duplicates)) }
        if rejected > 0 { entriesRejected.increment(by: Int64(rejected)) }
    }

    /// Counts a throttled batch.
    func throttled(_ reason: ThrottleReason) {
        switch reason {
        case .waitingRoom: throttledWaitingRoom.increment()
        case .serverBusy: throttledServerBusy.increment()
        default: throttledRateLimited.increment()
        }
    }

    /// Per-client bucket metrics, created once for the configured clients: the bucket's tokens (a
    /// gauge) and its throttled batches (a counter, fed the growth of the bucket's own count).
    private let clientMetrics = Mutex<[String: (tokens: CoreMetrics.Gauge, throttled: CoreMetrics.Counter, reported: UInt64)]>([:])

    /// The Prometheus text exposition, with ledger- and admission-derived values refreshed first.
    func render(stats: LedgerStats, admission: AdmissionController, now: UInt64) -> [UInt8] {
        waitingRoomDepth.record(Int(admission.waitingRoomDepth(now: now)))
        if let global = admission.global { globalTokens.record(Int(global.available(now: now))) }
        overloaded.record(admission.isOverloaded ? 1 : 0)
        for client in admission.clients {
            let throttledNow = client.throttled.load(ordering: .relaxed)
            let (metrics, growth) = clientMetrics.withLock { table in
                let m =
                    table[client.name]
                    ?? (
                        Gauge(label: "raffled_client_bucket_tokens", dimensions: [("client", client.name)], factory: factory),
                        Counter(label: "raffled_client_throttled_batches_total", dimensions: [("client", client.name)], factory: factory),
                        0
                    )
                table[client.name] = (m.tokens, m.throttled, max(m.reported, throttledNow))
                return (m, throttledNow > m.reported ? throttledNow - m.reported : 0)
            }
            metrics.tokens.record(Int(client.bucket.available(now: now)))
            if growth > 0 { metrics.throttled.increment(by: Int64(growth)) }
        }
        return render(stats: stats)
    }

    /// The Prometheus text exposition, with ledger-derived values refreshed first.
    func render(stats: LedgerStats) -> [UInt8] {
        let commits = stats.commits
        let previous = lastCommits.exchange(commits, ordering: .relaxed)
        if commits > previous { logCommits.increment(by: Int64(commits - previous)) }
        entriesPerCommit.record(commits == 0 ? 0 : Double(acceptedTotal.load(ordering: .relaxed)) / Double(commits))
        indexBytes.record(stats.indexBytes)
        indexBytesPerEntry.record(stats.indexBytesPerEntry)
        logBacklog.record(Int(stats.logAppendedBytes - min(stats.logDurableBytes, stats.logAppendedBytes)))
        if let bytes = stats.logDiskBytes { logDiskBytes.record(Int(clamping: bytes)) }
        process.update()
        var out: [UInt8] = []
        registry.emit(into: &out)
        return out
    }
}
