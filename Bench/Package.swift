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
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        // The gRPC peer (grpc-peer only: raffle-bench does not build these).
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        // The load harness: drop / bulk / mobile / single / get / smoke (see README.md in this folder).
        .executableTarget(
            name: "raffle-bench",
            dependencies: [
                .product(name: "RaffleClient", package: "raffled"),
                .product(name: "RaffleClientNIO", package: "raffled"),
                .product(name: "RaffleHTTP2", package: "raffled"),
                .product(name: "RaffleWire", package: "raffled"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/RaffleBench",
            // As in the server's hot modules: no dynamic exclusivity checks in release builds (the
            // generator's per-request state is owned by one event loop; see the root Package.swift).
            swiftSettings: [.swiftLanguageMode(.v6), .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))],
            plugins: [.plugin(name: "GitRevision", package: "raffled")]
        ),
        // The same ledger behind grpc-swift-2 + protobuf: the peer a Swift team would build instead.
        .executableTarget(
            name: "grpc-peer",
            dependencies: [
                .product(name: "RaffleLedger", package: "raffled"),
                .product(name: "RaffleCore", package: "raffled"),
                .product(name: "RaffleWire", package: "raffled"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Sources/GRPCPeer",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // A unique-entry load generator for durable batched ingest (until raffle-bench exists).
        .executableTarget(
            name: "IngestLoad",
            dependencies: [
                .product(name: "RaffleHTTP2", package: "raffled"),
                .product(name: "RaffleWire", package: "raffled"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Sources/IngestLoad",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "AdmissionBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RaffleAdmission", package: "raffled"),
            ],
            path: "Benchmarks/AdmissionBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ClientBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RaffleClient", package: "raffled"),
                .product(name: "RaffleClientNIO", package: "raffled"),
                .product(name: "RaffleWire", package: "raffled"),
            ],
            path: "Benchmarks/ClientBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
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
