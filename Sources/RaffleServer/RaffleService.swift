public import ServiceLifecycle

/// The server as a swift-service-lifecycle `Service`: `run()` keeps it serving (and closing due
/// raffles) until graceful shutdown (SIGTERM/SIGINT in `raffled`), then stops accepting, finishes
/// in-flight requests, fsyncs the log and returns.
public struct RaffleService: Service {
    let server: RaffleServer

    /// Wraps a started server.
    public init(server: RaffleServer) { self.server = server }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await server.run()
        } onGracefulShutdown: {
            server.requestStop()
        }
        await server.shutdown()
    }
}
