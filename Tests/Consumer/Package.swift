// swift-tools-version: 6.1
//
// An app that depends on raffled's client library the way any app does: by version, from a git
// repository. `scripts/consumer-check` points RAFFLED_PACKAGE_URL at a tagged clone of this
// repository, builds this package and runs it against a real raffled over TLS. It fails to resolve
// if a target reachable from the RaffleClient product carries unsafe flags, and the check fails if
// SwiftNIO or a system library (libnghttp2) is built into it.
import Foundation
import PackageDescription

let raffled = ProcessInfo.processInfo.environment["RAFFLED_PACKAGE_URL"] ?? "https://github.com/raffled/raffled.git"

let package = Package(
    name: "consumer",
    platforms: [.macOS(.v13), .iOS(.v16)],
    dependencies: [
        .package(url: raffled, from: "0.1.0")
    ],
    targets: [
        .executableTarget(
            name: "consumer",
            dependencies: [.product(name: "RaffleClient", package: "raffled")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
