public import ServiceLifecycle

/// The server as a swift-service-lifecycle `Service` with a readiness callback: `run()` calls
/// `onRunning`, then runs the server (`RaffleServer.run()`: serving and closing due raffles until
/// graceful shutdown or cancellation, then a graceful stop).
public struct RaffleService: Service {
    let server: RaffleServer
    let onRunning: @Sendable () -> Void

    /// Wraps a started server. `onRunning` is called once the service runs — after the service
    /// group has installed its signal handlers — so a supervisor told "ready" can send SIGTERM safely.
    public init(server: RaffleServer, onRunning: @escaping @Sendable () -> Void = {}) {
        self.server = server
        self.onRunning = onRunning
    }

    public func run() async throws {
        onRunning()
        try await server.run()
    }
}
