import Foundation
import RaffleTestSupport
import Testing

@Suite("Clients/README.md examples")
struct ReadmeExamplesTests {
    /// The lines of `text`, each without its leading and trailing blanks, empty ones dropped.
    func normalized(_ text: Substring) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
    }

    @Test func everySwiftExampleIsCompiledByTheTests() throws {
        let readme = try String(contentsOfFile: repositoryRoot + "/Clients/README.md", encoding: .utf8)
        let compiled = normalized(Substring(try String(contentsOfFile: repositoryRoot + "/Tests/RaffleClientTests/ReadmeExamples.swift", encoding: .utf8)))
        var checked = 0
        for block in readme.components(separatedBy: "```swift\n").dropFirst() {
            guard let end = block.range(of: "```") else { continue }
            // Package-manifest fragments are Tests/Consumer's business; import lines sit at the top of the file.
            let lines = normalized(block[..<end.lowerBound]).filter { !$0.hasPrefix("import ") }
            guard let first = lines.first, !first.hasPrefix(".package(") && !first.hasPrefix(".product(") else { continue }
            let found = (0...max(compiled.count - lines.count, 0)).contains { compiled[$0..<min($0 + lines.count, compiled.count)].elementsEqual(lines) }
            #expect(found, "this README example is not in ReadmeExamples.swift (or differs): \(lines.first ?? "")")
            checked += 1
        }
        #expect(checked >= 5, "the README's examples were found")
    }
}
