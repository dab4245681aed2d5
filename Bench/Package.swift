// swift-tools-version: 6.1
//
// raffled's benchmarks: their own package, so ordo-one/benchmark (and later the load harness and
// its peers) never slow the root build. Depends on the root package by path.
//
//   cd Bench && swift package benchmark            # every benchmark
//   cd Bench && swift package benchmark --filter Codec
import PackageDescription

let package = Package(
    name: "raffled-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "raffled", path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CodecBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RaffleWire", package: "raffled"),
            ],
            path: "Benchmarks/CodecBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
