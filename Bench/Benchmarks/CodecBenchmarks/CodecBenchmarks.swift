// Codec micro-benchmarks: decode + validate an entry batch in place, with and without the CRC32C
// checksum, and encode its ack. Targets (issue #2): 0 mallocs, ≤ 2 ns per entry for decode + validate.
// Results are recorded in Bench/RESULTS.md.
import Benchmark
import RaffleWire

private func batchBytes(entries: Int, checksum: Bool) -> [UInt8] {
    let frame = Frame(
        requestID: 42, flags: checksum ? .checksum : [],
        body: .entryBatch(raffleID: 7, entries: (0..<entries).map { Entry(userID: 1_000_000 + UInt64($0), tickets: 1) }))
    return (try? FrameEncoder.encode(frame)) ?? []
}

/// Decodes and validates `bytes` (one entry-batch frame) once per scaled iteration.
private func decodeAndValidate(_ benchmark: Benchmark, _ bytes: [UInt8]) {
    let decoder = FrameDecoder(receiver: .server)
    let outcomes = UnsafeMutableBufferPointer<EntryOutcome>.allocate(capacity: 4_096)
    defer { outcomes.deallocate() }
    benchmark.startMeasurement()
    bytes.withUnsafeBytes { raw in
        for _ in benchmark.scaledIterations {
            guard let view = try? decoder.decode(raw), case .entryBatch(let batch) = view.payload else {
                fatalError("benchmark input did not decode")
            }
            blackHole(batch.validate(maxTicketsPerEntry: 10, into: outcomes))
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .instructions, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    for checksum in [false, true] {
        let name = "Codec: decode+validate 1,000-entry batch" + (checksum ? " (CRC32C)" : "")
        // scalingFactor .kilo: one inner iteration is one batch, results are shown per 1,000 batches;
        // per entry = time per batch / 1,000.
        Benchmark(name) { benchmark in
            decodeAndValidate(benchmark, batchBytes(entries: 1_000, checksum: checksum))
        }
    }

    Benchmark("Codec: encode 1,000-outcome batch ack") { benchmark in
        let outcomes = UnsafeMutableBufferPointer<EntryOutcome>.allocate(capacity: 1_000)
        outcomes.initialize(repeating: .accepted)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 2_048, alignment: 8)
        defer {
            outcomes.deallocate()
            out.deallocate()
        }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(FrameEncoder.encodeBatchAck(requestID: 1, raffleID: 7, outcomes: UnsafeBufferPointer(outcomes), into: out))
        }
    }

    Benchmark("Codec: decode single-entry batch") { benchmark in
        decodeAndValidate(benchmark, batchBytes(entries: 1, checksum: false))
    }
}
