// swift-tools-version: 6.1
//
// raffled — raffle-entry ingestion over HTTP/2 (libnghttp2 + SwiftNIO), raw TCP and UDP.
//
// Layers, bottom up (see README.md):
//   CRaffleCRC32C, RaffleCRC32C — the checksum, shared by the codec and the log.
//   RaffleWire                 — the wire protocol: codec over raw bytes, no NIO, no sockets.
//   RaffleWireNIO              — the same codec read from / written to NIO ByteBuffers.
//   CNGHTTP2                   — libnghttp2, behind one system-library target.
// Heavy benchmark dependencies live in Bench/'s own package so this build stays lean.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// The per-request and per-entry modules (HTTP/2 glue, server, ledger, index): dynamic exclusivity
// checks cost ~15% of server CPU time in a profile (swift_beginAccess/endAccess and their TLS
// lookups on every access to a connection's stream table or a raffle's arrays). This code never
// holds an inout access across a call that could reach the same property (callbacks index
// `streams[i]` afresh each time; the ledger mutates records only inside its lock), so the checks are
// off for these modules in release builds; debug builds keep them, and the tests run in debug.
let hotPath: [SwiftSetting] = strict + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "raffled",
    // macOS 15: the server and the NIO client transports use Synchronization (Mutex, Atomic).
    // iOS 16: apps take only RaffleClient (the core + URLSession), which uses Duration and
    // ContinuousClock (iOS 16) and a lock of its own instead of Synchronization (iOS 18).
    platforms: [.macOS(.v15), .iOS(.v16)],
    products: [
        .library(name: "RaffleWire", targets: ["RaffleWire"]),
        .library(name: "RaffleWireNIO", targets: ["RaffleWireNIO"]),
        .library(name: "RaffleServer", targets: ["RaffleServer"]),
        .library(name: "RaffleHTTP2", targets: ["RaffleHTTP2", "RaffleHTTP2Client"]),
        .library(name: "RaffleAdmission", targets: ["RaffleAdmission"]),
        .library(name: "RaffleCore", targets: ["RaffleCore"]),
        .library(name: "RaffleLedger", targets: ["RaffleLedger", "RaffleStorage"]),
        .library(name: "RafflePostgres", targets: ["RafflePostgres"]),
        // For apps: the client core and its URLSession transport — no NIO, no C library.
        .library(name: "RaffleClient", targets: ["RaffleClient"]),
        // For backends and bulk partners: the HTTP/2 (libnghttp2), raw-TCP and UDP transports, with TLS.
        .library(name: "RaffleClientNIO", targets: ["RaffleClientHTTP2", "RaffleClientSockets"]),
        // `let gitRevision` for --version (raffled, raffle; Bench's raffle-bench uses it too).
        .plugin(name: "GitRevision", targets: ["GitRevision"]),
        .executable(name: "raffled", targets: ["raffled"]),
        .executable(name: "raffle", targets: ["raffle"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // libnghttp2 from the system (Debian/Ubuntu: libnghttp2-dev; scripts/setup installs it).
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"]), .brew(["nghttp2"])]
        ),
        // CRC32C (Castagnoli) with the CPU's crc32 instruction where there is one. Purpose-built
        // because no package on the allowed list offers CRC32C, and a table-driven Swift loop costs
        // ~8x the hardware instruction per byte on the frame path (see Bench/RESULTS.md).
        .target(name: "CRaffleCRC32C"),
        // __builtin_prefetch for the dedupe index (see the header for why).
        .target(name: "CRafflePrefetch"),
        // CRC32C over the C target: shared by the wire codec (frame checksums) and the log (record
        // checksums), so storage does not depend on the codec for it.
        .target(
            name: "RaffleCRC32C",
            dependencies: [.target(name: "CRaffleCRC32C")],
            swiftSettings: strict
        ),
        .target(
            name: "RaffleWire",
            dependencies: ["RaffleCRC32C"],
            swiftSettings: strict
        ),
        .target(
            name: "RaffleWireNIO",
            dependencies: [
                "RaffleWire",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Domain: raffles, the verifiable draw, exports. No I/O. Reached by the client products, so
        // no unsafe flags (SwiftPM refuses a versioned dependency on a product that has them).
        .target(
            name: "RaffleCore",
            dependencies: ["RaffleWire", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        // The segmented write-ahead log with group commit.
        .target(
            name: "RaffleStorage",
            dependencies: ["RaffleCRC32C"],
            swiftSettings: strict
        ),
        // Admission control: GCRA buckets, API-key clients, waiting room, backpressure. No I/O.
        .target(
            name: "RaffleAdmission",
            dependencies: ["RaffleWire"],
            swiftSettings: hotPath
        ),
        .testTarget(
            name: "RaffleAdmissionTests",
            dependencies: ["RaffleAdmission", "RaffleWire"],
            swiftSettings: strict
        ),
        // The ledger interface and its local implementation: the dedupe index and the write-ahead log.
        .target(
            name: "RaffleLedger",
            dependencies: ["RaffleWire", "RaffleCore", "RaffleStorage", "CRafflePrefetch"],
            swiftSettings: hotPath
        ),
        // The HTTP/2 glue over libnghttp2 (a session driven through memory; every unsafe nghttp2 call is
        // in its two files), shared by the server and the client. Reached by the RaffleClientNIO
        // product, so no unsafe flags; the server's per-stream code (RaffleServer) keeps them.
        .target(
            name: "RaffleHTTP2",
            dependencies: ["CNGHTTP2", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // A small HTTP/2 client on the glue (TLS optional): the client library's HTTP/2 transport,
        // the tests and the bench use it.
        .target(
            name: "RaffleHTTP2Client",
            dependencies: [
                "RaffleHTTP2",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        // The server: HTTP/2 and HTTP/1.1 connections (TLS optional), the entry path, the admin API, metrics.
        .target(
            name: "RaffleServer",
            dependencies: [
                "RaffleWire", "RaffleWireNIO", "RaffleHTTP2", "RaffleCore", "RaffleLedger", "RaffleAdmission",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: hotPath
        ),
        // The ledger shared by several raffled nodes: PostgreSQL through postgres-nio, group commit
        // into one statement per round trip (docs/SCALING.md).
        .target(
            name: "RafflePostgres",
            dependencies: [
                "RaffleLedger", "RaffleCore", "RaffleWire",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .plugin(name: "GitRevision", capability: .buildTool(), path: "Sources/GitRevisionPlugin"),
        .executableTarget(
            name: "raffled",
            dependencies: [
                "RaffleServer", "RaffleStorage", "RaffleCore", "RaffleAdmission", "RaffleLedger", "RafflePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict,
            plugins: ["GitRevision"]
        ),
        // The client library: batching, retries, admin calls (no NIO), and its HTTP/2 transport.
        .target(
            name: "RaffleClient",
            dependencies: ["RaffleWire", "RaffleCore", .product(name: "Logging", package: "swift-log")],
            path: "Clients/Swift/RaffleClient",
            swiftSettings: strict
        ),
        .target(
            name: "RaffleClientHTTP2",
            dependencies: [
                "RaffleClient", "RaffleHTTP2Client", "RaffleWire",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Clients/Swift/RaffleClientHTTP2",
            swiftSettings: strict
        ),
        // Raw TCP and UDP transports for the client.
        .target(
            name: "RaffleClientSockets",
            dependencies: [
                "RaffleClient", "RaffleWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Clients/Swift/RaffleClientSockets",
            swiftSettings: strict
        ),
        // The `raffle` command line, on top of the client library.
        .executableTarget(
            name: "raffle",
            dependencies: [
                "RaffleClient", "RaffleClientHTTP2", "RaffleCore", "RaffleWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Clients/Swift/raffle",
            swiftSettings: strict,
            plugins: ["GitRevision"]
        ),
        .testTarget(
            name: "RaffleClientTests",
            dependencies: [
                "RaffleClient", "RaffleClientHTTP2", "RaffleClientSockets", "RaffleServer", "RaffleAdmission", "RaffleWire", "RaffleCore",
                "RaffleTestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        // Helpers shared by the test targets (temporary directories, frame builders).
        .target(
            name: "RaffleTestSupport",
            dependencies: ["RaffleWire", "RaffleStorage"],
            path: "Tests/RaffleTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "RaffleServerTests",
            dependencies: [
                "RaffleServer", "RaffleHTTP2", "RaffleHTTP2Client", "RaffleWire", "RaffleWireNIO", "RaffleCore", "RaffleLedger", "RaffleStorage",
                "RaffleAdmission", "RafflePostgres", "RaffleTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RaffleStorageTests",
            dependencies: ["RaffleStorage", "RaffleCore", "RaffleLedger", "RaffleWire", "RaffleTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RaffleWireTests",
            dependencies: [
                "RaffleWire",
                "RaffleWireNIO",
                "RaffleTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CNGHTTP2Tests",
            dependencies: ["CNGHTTP2"],
            swiftSettings: strict
        ),
        // Fuzz targets (libFuzzer). A plain build makes corpus replayers (the test command replays
        // Tests/Fuzz/corpus); scripts/fuzz builds them with -sanitize=fuzzer,address and runs them.
        .target(name: "RaffleFuzzSupport", path: "Tests/Fuzz/Support", swiftSettings: strict),
        .executableTarget(name: "fuzz-frames", dependencies: ["RaffleWire", "RaffleFuzzSupport"], path: "Tests/Fuzz/frames", swiftSettings: strict),
        .executableTarget(name: "fuzz-replay", dependencies: ["RaffleLedger", "RaffleFuzzSupport"], path: "Tests/Fuzz/replay", swiftSettings: strict),
        // The HTTP/2 and HTTP/1.1 connection targets' shared driver.
        .target(
            name: "RaffleFuzzConnection",
            dependencies: ["RaffleServer", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio")],
            path: "Tests/Fuzz/Connection", swiftSettings: strict),
        .executableTarget(name: "fuzz-http2", dependencies: ["RaffleFuzzConnection", "RaffleFuzzSupport"], path: "Tests/Fuzz/http2", swiftSettings: strict),
        .executableTarget(name: "fuzz-http1", dependencies: ["RaffleFuzzConnection", "RaffleFuzzSupport"], path: "Tests/Fuzz/http1", swiftSettings: strict),
    ]
)
