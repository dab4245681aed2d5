public import ServiceLifecycle

/// The server as a swift-service-lifecycle `Service`: `run()` keeps it serving (and closing due
/// raffles) until graceful shutdown (SIGTERM/SIGINT in `raffled`), then stops accepting, finishes
/// in-flight requests, fsyncs the log and returns.
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
        await withGracefulShutdownHandler {
            await server.run()
        } onGracefulShutdown: {
            server.requestStop()
        }
        await server.shutdown()
    }
}
