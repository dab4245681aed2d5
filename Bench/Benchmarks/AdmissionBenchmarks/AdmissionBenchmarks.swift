// Admission decision cost: one batch through the client's bucket and the global bucket.
// Target (issue #4): ≤ 50 ns and 0 mallocs per decision. Results in Bench/RESULTS.md.
import Benchmark
import RaffleAdmission

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    var config = AdmissionConfiguration()
    config.global = RateLimit(ratePerSecond: 1_000_000_000, burst: 1 << 40)
    config.anonymous = RateLimit(ratePerSecond: 1_000_000_000, burst: 1 << 40)
    config.clients = [.init(name: "partner", key: "partner-secret-key-0123456789", rate: 1_000_000_000, burst: 1 << 40)]
    let controller = AdmissionController(config)

    Benchmark("Admission: decide (API-key client + global bucket)") { benchmark in
        var anonymous = LocalGCRA(config.anonymous)
        var now: UInt64 = 1_000_000_000
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            now &+= 1_000
            blackHole(controller.admit(client: 0, anonymous: &anonymous, entries: 10, now: now))
        }
    }

    Benchmark("Admission: decide (anonymous connection + global bucket)") { benchmark in
        var anonymous = LocalGCRA(config.anonymous)
        var now: UInt64 = 1_000_000_000
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            now &+= 1_000
            blackHole(controller.admit(client: nil, anonymous: &anonymous, entries: 1, now: now))
        }
    }

    Benchmark("Admission: throttled decision (waiting-room slot)") { benchmark in
        var tight = AdmissionConfiguration()
        tight.global = RateLimit(ratePerSecond: 1, burst: 1)
        tight.anonymous = RateLimit(ratePerSecond: 1_000_000_000, burst: 1 << 40)
        tight.waitingRoomHorizonMilliseconds = UInt64.max >> 24
        let throttling = AdmissionController(tight)
        var anonymous = LocalGCRA(tight.anonymous)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(throttling.admit(client: nil, anonymous: &anonymous, entries: 1, now: 1_000))
        }
    }
}
