import Foundation

/// The fuzz targets' `main` when they are built without libFuzzer (a normal `swift build`): runs
/// the target once on each file named on the command line, or on every file in each directory named
/// there, and says how many it ran. The test command uses it to replay the seed corpora; built with
/// `-sanitize=fuzzer` (scripts/fuzz) the same target is a libFuzzer binary instead.
public enum CorpusReplay {
    public static func main(_ target: (UnsafeRawBufferPointer) -> Void) -> Never {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            FileHandle.standardError.write(Data("usage: \(CommandLine.arguments[0]) FILE|DIR...\n".utf8))
            exit(2)
        }
        var ran = 0
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("\(path): no such file or directory\n".utf8))
                exit(2)
            }
            let files =
                isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                data.withUnsafeBytes { target($0) }
                ran += 1
            }
        }
        print("\(CommandLine.arguments[0].split(separator: "/").last ?? ""): replayed \(ran) inputs, no crash")
        exit(0)
    }
}
