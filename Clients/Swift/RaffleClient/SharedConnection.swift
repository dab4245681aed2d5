/// The one connection a transport shares between all its calls, made by one connect at a time:
/// callers that find none (or a dead one) while a connect is under way wait for that connect
/// instead of each opening a socket of their own.
///
/// Without it, a drop's first second — thousands of users calling `submit` before the first
/// connection is up — opened one socket per call until the process ran out of file descriptors
/// (EMFILE), stalled, and libdispatch trapped (the SIGILL of issue #18). `package`: shared by this
/// package's transports, not part of the client's API.
package final class SharedConnection<Connection: AnyObject & Sendable>: Sendable {
    private enum State {
        case none
        case connecting(Task<Connection, any Error>)
        case ready(Connection)
    }

    private let state = Locked<State>(.none)

    private enum Next {
        case use(Connection)
        case wait(Task<Connection, any Error>)
    }

    package init() {}

    /// The current connection if there is one and `usable` says so — the path almost every call
    /// takes, with no closure to allocate; nil: call `get(usable:connect:)`.
    package func ready(usable: (Connection) -> Bool) -> Connection? {
        state.withLock { s in
            if case .ready(let c) = s, usable(c) { return c }
            return nil
        }
    }

    /// The current connection if `usable` says so; else the result of `connect`, run once for every
    /// caller that arrives while it runs. A failed connect is thrown to each of them, and the next
    /// call tries again.
    package func get(
        usable: (Connection) -> Bool, connect: @escaping @Sendable () async throws -> Connection
    ) async throws -> Connection {
        let next: Next = state.withLock { s in
            switch s {
            case .ready(let c) where usable(c):
                return .use(c)
            case .connecting(let task):
                return .wait(task)
            case .none, .ready:
                let task = Task { try await connect() }
                s = .connecting(task)
                return .wait(task)
            }
        }
        switch next {
        case .use(let c):
            return c
        case .wait(let task):
            do {
                let c = try await task.value
                state.withLock { s in
                    if case .connecting(let current) = s, current == task { s = .ready(c) }
                }
                return c
            } catch {
                state.withLock { s in
                    if case .connecting(let current) = s, current == task { s = .none }
                }
                throw error
            }
        }
    }

    /// Drops `failed` if it is the current connection (the next call reconnects); true if it was.
    @discardableResult
    package func forget(_ failed: Connection) -> Bool {
        state.withLock { s in
            guard case .ready(let c) = s, c === failed else { return false }
            s = .none
            return true
        }
    }

    /// Takes the current connection out (for `close()`).
    package func take() -> Connection? {
        state.withLock { s in
            defer { s = .none }
            if case .ready(let c) = s { return c }
            return nil
        }
    }
}
