import CoreML
import Foundation

/** One .mlpackage, one function per descendant; MLModelConfiguration.functionName picks it (iOS 18+). */
final class SwitchableClassifier {
    struct Row: Decodable {
        let index: Int, key: String, function: String
        let top1: Double?, latency_ms: Double?
    }

    let rows: [Row]
    private let url: URL  // the compiled model (.mlmodelc) in the app bundle
    private var loaded: [String: MLModel] = [:]

    init(compiledModelURL: URL) throws {
        url = compiledModelURL
        let probe = try MLModel(contentsOf: url)  // the default function
        let meta = probe.modelDescription.metadata[.creatorDefinedKey] as? [String: String] ?? [:]
        rows = try JSONDecoder().decode([Row].self, from: Data((meta["descendants"] ?? "[]").utf8))
    }

    /** Hot device -> the fastest descendant; older chips -> the middle one; else the most accurate. */
    func pick() -> Row {
        let bySpeed = rows.sorted { ($0.latency_ms ?? .infinity) < ($1.latency_ms ?? .infinity) }
        let best = rows.max { ($0.top1 ?? 0) < ($1.top1 ?? 0) }!
        switch ProcessInfo.processInfo.thermalState {
        case .serious, .critical: return bySpeed[0]
        case .fair: return bySpeed[bySpeed.count / 2]
        default: return Self.isOlderDevice() ? bySpeed[bySpeed.count / 2] : best
        }
    }

    func model(_ row: Row) throws -> MLModel {
        if let m = loaded[row.function] { return m }
        let config = MLModelConfiguration()
        config.functionName = row.function  // e.g. "ti6_0to4__b6_5to5" for key "ti6.0-4+b6.5-5"
        let m = try MLModel(contentsOf: url, configuration: config)
        loaded[row.function] = m
        return m
    }

    /** The class label for a CGImage (the model resizes nothing: pass img_size x img_size). */
    func classify(_ image: CGImage) throws -> String {
        let m = try model(pick())
        let constraint = m.modelDescription.inputDescriptionsByName["image"]!.imageConstraint!
        let input = try MLDictionaryFeatureProvider(dictionary: [
            "image": try MLFeatureValue(cgImage: image, constraint: constraint, options: nil)])
        return try m.prediction(from: input).featureValue(for: "classLabel")!.stringValue
    }

    /** "iPhone14,5" style identifier; list the ones your measurements mark as slow. */
    static func isOlderDevice() -> Bool {
        var info = utsname()
        uname(&info)
        let id = withUnsafeBytes(of: &info.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return ["iPhone12,1", "iPhone12,8", "iPhone13,1"].contains(id)
    }
}
