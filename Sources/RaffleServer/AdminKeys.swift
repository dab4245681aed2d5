import Crypto
import Foundation
import RaffleCore

/// The keys that unlock the admin API (creating, closing, drawing, exporting, per-user lookups,
/// ledger stats). Only SHA-256 digests are held: a key given in clear is hashed on load, so neither
/// memory dumps of the key table nor the keys file need to hold a secret.
///
/// A presented key is hashed and its digest compared with every stored digest over all 32 bytes,
/// without an early exit, so the time taken says nothing about how much of a key was right, nor
/// about its length (digests are fixed-length).
public struct AdminKeys: Sendable, Hashable {
    /// One key: a name for the logs and its SHA-256 digest.
    public struct Key: Sendable, Hashable {
        public var name: String
        public var sha256: [UInt8]

        /// A key given in clear (hashed here).
        public init(name: String, key: String) {
            self.name = name
            sha256 = Array(SHA256.hash(data: Array(key.utf8)))
        }

        /// A key given as its SHA-256 digest (32 bytes).
        public init(name: String, sha256: [UInt8]) {
            self.name = name
            self.sha256 = sha256
        }
    }

    /// The keys; empty: the admin API refuses every call (403) until one is configured.
    public var keys: [Key]

    /// No keys.
    public init(_ keys: [Key] = []) { self.keys = keys }

    /// Shortest key accepted in clear: 16 characters (a guessable admin key is no key).
    public static let minimumKeyLength = 16

    /// Whom `authorization` (an `authorization` header value) names: the key's name, or why not.
    public func check(authorization: some Collection<UInt8>) -> AdminAuthResult {
        guard !keys.isEmpty else { return .noKeysConfigured }
        let prefix = Array("Bearer ".utf8)
        guard authorization.count > prefix.count else { return authorization.isEmpty ? .missing : .wrong }
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let scheme = authorization.prefix(prefix.count).map { $0 | ($0 >= 0x41 && $0 <= 0x5A ? 0x20 : 0) }
        guard scheme == Array("bearer ".utf8) else { return .wrong }
        let digest = Array(SHA256.hash(data: Array(authorization.dropFirst(prefix.count))))
        var found = -1
        for (i, key) in keys.enumerated() {
            var difference: UInt8 = key.sha256.count == digest.count ? 0 : 1
            for j in 0..<min(key.sha256.count, digest.count) { difference |= key.sha256[j] ^ digest[j] }
            // Branch-free select: keep the first match without an early exit.
            let match = difference == 0 && found < 0
            found = match ? i : found
        }
        return found >= 0 ? .allowed(keys[found].name) : .wrong
    }

    /// Reads a keys file: `{"keys": [{"name": "ops", "sha256": "<64 hex digits>"}, {"name": "ci", "key": "<secret>"}]}`.
    /// - Throws: `AdminKeysError` naming the file and what is wrong with it.
    public static func load(path: String) throws -> AdminKeys {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AdminKeysError(message: "cannot read the admin keys file \(path)")
        }
        struct File: Decodable {
            struct Entry: Decodable {
                var name: String
                var key: String?
                var sha256: String?
            }
            var keys: [Entry]
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw AdminKeysError(message: "\(path) is not a valid admin keys file (\(error)); expected {\"keys\":[{\"name\":\"ops\",\"sha256\":\"…\"}]}")
        }
        var keys: [Key] = []
        for entry in file.keys {
            switch (entry.key, entry.sha256) {
            case (let key?, nil):
                guard key.utf8.count >= minimumKeyLength else {
                    throw AdminKeysError(message: "\(path): admin key \(entry.name) is shorter than \(minimumKeyLength) characters")
                }
                keys.append(Key(name: entry.name, key: key))
            case (nil, let hex?):
                guard let digest = Draw.bytes(hex: hex), digest.count == 32 else {
                    throw AdminKeysError(message: "\(path): admin key \(entry.name): sha256 must be 64 hex digits")
                }
                keys.append(Key(name: entry.name, sha256: digest))
            default:
                throw AdminKeysError(message: "\(path): admin key \(entry.name) needs exactly one of \"key\" and \"sha256\"")
            }
        }
        guard !keys.isEmpty else { throw AdminKeysError(message: "\(path) names no admin key") }
        return AdminKeys(keys)
    }

    /// A new random key: 32 bytes from the system's generator, as 64 hex digits.
    public static func generateKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return Draw.hex((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// The hex SHA-256 of `key`, as a keys file holds it.
    public static func sha256Hex(of key: String) -> String {
        Draw.hex(SHA256.hash(data: Array(key.utf8)))
    }
}

/// The answer to an admin call's credentials.
public enum AdminAuthResult: Sendable, Hashable {
    /// A configured key: its name.
    case allowed(String)
    /// No `authorization` header: 401 with `www-authenticate: Bearer`.
    case missing
    /// A key that is not configured, or not a Bearer credential: 403.
    case wrong
    /// The server has no admin key: 403, and the message says how to configure one.
    case noKeysConfigured
}

/// An admin keys file that cannot be used.
public struct AdminKeysError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}
