public import RaffleWire

/// Why a client call failed: a kind to branch on, a message for people, and the error underneath.
///
/// ```swift
/// do { try await client.enter(user: 42, raffle: 7) }
/// catch let error as RaffleClientError where error.kind == .deadlineExceeded { showRetryLater() }
/// catch let error as RaffleClientError where error.kind.serverCode == .unknownRaffle { showGone() }
/// ```
///
/// A cancelled task gets `CancellationError`, not a `RaffleClientError`.
public struct RaffleClientError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure. An open set: new kinds may be added without breaking a `switch` (there
    /// is none to break: compare with `==`, or read `serverCode` / `httpStatus`).
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Base: Sendable, Hashable {
            case connectionFailed, timedOut, server(ProtocolErrorCode), invalidResponse, deadlineExceeded
            case retryBudgetExhausted, invalidRequest, http(Int), throttled
        }

        private let base: Base

        private init(_ base: Base) { self.base = base }

        /// The connection could not be made or was lost. Retryable.
        public static let connectionFailed = Kind(.connectionFailed)
        /// No answer in time. Retryable.
        public static let timedOut = Kind(.timedOut)
        /// The server refused with a protocol error code (retryable only for `0x02xx` codes).
        public static func server(_ code: ProtocolErrorCode) -> Kind { Kind(.server(code)) }
        /// The server's reply was not what the protocol says.
        public static let invalidResponse = Kind(.invalidResponse)
        /// The call's deadline passed; `underlying` is the last failure.
        public static let deadlineExceeded = Kind(.deadlineExceeded)
        /// The retry budget is spent; `underlying` is the last failure.
        public static let retryBudgetExhausted = Kind(.retryBudgetExhausted)
        /// The request itself is invalid (e.g. an empty batch).
        public static let invalidRequest = Kind(.invalidRequest)
        /// An admin call got this HTTP status.
        public static func http(_ status: Int) -> Kind { Kind(.http(status)) }
        /// The server throttled the request (as an `underlying` error: what a retry waited for).
        public static let throttled = Kind(.throttled)

        /// The protocol error code, for `.server(code)`.
        public var serverCode: ProtocolErrorCode? {
            if case .server(let code) = base { return code }
            return nil
        }

        /// The HTTP status, for `.http(status)`.
        public var httpStatus: Int? {
            if case .http(let status) = base { return status }
            return nil
        }

        public var description: String {
            switch base {
            case .connectionFailed: "connectionFailed"
            case .timedOut: "timedOut"
            case .server(let code): "server(\(code))"
            case .invalidResponse: "invalidResponse"
            case .deadlineExceeded: "deadlineExceeded"
            case .retryBudgetExhausted: "retryBudgetExhausted"
            case .invalidRequest: "invalidRequest"
            case .http(let status): "http(\(status))"
            case .throttled: "throttled"
            }
        }
    }

    /// What kind of failure.
    public var kind: Kind
    /// What happened, for people.
    public var message: String
    /// The error underneath: for deadline and budget failures, the last attempt's failure (a
    /// `RaffleClientError`); for transport failures, the system's error (e.g. `URLError`) where there is one.
    public var underlying: (any Error & Sendable)?

    /// A failure of `kind`.
    public init(_ kind: Kind, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.kind = kind
        self.message = message
        self.underlying = underlying
    }

    /// Whether retrying the same call may succeed.
    public var isRetryable: Bool {
        if kind == .connectionFailed || kind == .timedOut { return true }
        return kind.serverCode?.isRetryable ?? false
    }

    public var description: String {
        message + (underlying.map { " (last failure: \($0))" } ?? "")
    }
}
