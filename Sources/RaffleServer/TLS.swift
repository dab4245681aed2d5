import Foundation
import NIOSSL
import Synchronization

/// Where the server's TLS certificate chain and private key live (PEM files).
public struct TLSFiles: Sendable, Hashable {
    /// PEM file with the server's certificate first, then any intermediates (a chain).
    public var certificateChainPath: String
    /// PEM file with the private key of the first certificate.
    public var privateKeyPath: String

    public init(certificateChainPath: String, privateKeyPath: String) {
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
    }
}

/// The certificate and key could not be used.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// What a TLS (re)load found, for the log line.
public struct TLSLoaded: Sendable {
    /// Subject of the leaf certificate, as BoringSSL prints it.
    public var subject: String
    /// Certificates in the chain.
    public var chainLength: Int
    /// The leaf's expiry, seconds since the epoch.
    public var notValidAfter: Int
    /// Whether the leaf has expired already (the server still serves it: clients will refuse).
    public var expired: Bool
}

/// The TLS context new connections get. Reloading swaps it; connections already established keep
/// the context they were made with, so a reload drops none of them.
final class TLSContextHolder: Sendable {
    let files: TLSFiles
    private let current: Mutex<NIOSSLContext>

    init(files: TLSFiles) throws {
        self.files = files
        current = Mutex(try Self.makeContext(files).context)
    }

    /// The context for the next connection.
    var context: NIOSSLContext { current.withLock { $0 } }

    /// Reads the files again; on success new connections use them. On failure the old context stays.
    func reload() throws -> TLSLoaded {
        let (context, loaded) = try Self.makeContext(files)
        current.withLock { $0 = context }
        return loaded
    }

    /// ALPN protocols the main port offers, most preferred first.
    static let applicationProtocols = ["h2", "http/1.1"]

    static func makeContext(_ files: TLSFiles) throws -> (context: NIOSSLContext, loaded: TLSLoaded) {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(files.certificateChainPath) } catch {
            throw TLSSetupError(message: "cannot read the TLS certificate chain \(files.certificateChainPath) (PEM expected): \(error)")
        }
        guard let leaf = chain.first else {
            throw TLSSetupError(message: "\(files.certificateChainPath) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: files.privateKeyPath, format: .pem) } catch {
            throw TLSSetupError(message: "cannot read the TLS private key \(files.privateKeyPath) (PEM expected): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        let context: NIOSSLContext
        do { context = try NIOSSLContext(configuration: configuration) } catch {
            throw TLSSetupError(
                message: "cannot use \(files.certificateChainPath) with \(files.privateKeyPath) (does the key belong to the first certificate?): \(error)")
        }
        let notAfter = Int(leaf.notValidAfter)
        let loaded = TLSLoaded(
            subject: leaf.description, chainLength: chain.count, notValidAfter: notAfter, expired: notAfter < Int(Date().timeIntervalSince1970))
        return (context, loaded)
    }
}
