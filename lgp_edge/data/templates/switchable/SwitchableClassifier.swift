import CoreGraphics
import CoreML
import CoreVideo
import Foundation

enum SwitchableClassifierError: Error {
    case pixelBuffer(CVReturn), drawing
}

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

    /** The class label for a CGImage: the whole image resized to the model's input (no crop) and, for a
        grayscale model, gray as the mean of R, G and B, as in training (Core ML's own conversion of a
        CGImage would weight the colours by luminance). */
    func classify(_ image: CGImage) throws -> String {
        let m = try model(pick())
        let constraint = m.modelDescription.inputDescriptionsByName["image"]!.imageConstraint!
        let buffer = try Self.pixelBuffer(from: image, width: constraint.pixelsWide, height: constraint.pixelsHigh,
                                          gray: constraint.pixelFormatType == kCVPixelFormatType_OneComponent8)
        let input = try MLDictionaryFeatureProvider(dictionary: ["image": MLFeatureValue(pixelBuffer: buffer)])
        return try m.prediction(from: input).featureValue(for: "classLabel")!.stringValue
    }

    /** width x height pixels: OneComponent8 holding (R + G + B) / 3 when gray, else 32BGRA. */
    static func pixelBuffer(from image: CGImage, width: Int, height: Int, gray: Bool) throws -> CVPixelBuffer {
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        let drawn: Bool = rgba.withUnsafeMutableBytes { raw in
            guard let ctx = CGContext(data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                      bytesPerRow: width * 4, space: CGColorSpaceCreateDeviceRGB(),
                                      bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            ctx.interpolationQuality = .high
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else { throw SwitchableClassifierError.drawing }
        let format = gray ? kCVPixelFormatType_OneComponent8 : kCVPixelFormatType_32BGRA
        var out: CVPixelBuffer?
        let status = CVPixelBufferCreate(nil, width, height, format, nil, &out)
        guard status == kCVReturnSuccess, let buffer = out else { throw SwitchableClassifierError.pixelBuffer(status) }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let base = CVPixelBufferGetBaseAddress(buffer)!.assumingMemoryBound(to: UInt8.self)
        for y in 0..<height {
            for x in 0..<width {
                let p = (y * width + x) * 4
                let (r, g, b) = (Int(rgba[p]), Int(rgba[p + 1]), Int(rgba[p + 2]))
                if gray {
                    base[y * rowBytes + x] = UInt8((r + g + b) / 3)   // the mean of R, G and B
                } else {
                    let q = y * rowBytes + x * 4                       // BGRA
                    base[q] = UInt8(b); base[q + 1] = UInt8(g); base[q + 2] = UInt8(r); base[q + 3] = 255
                }
            }
        }
        return buffer
    }

    /** "iPhone14,5" style identifier; list the ones your measurements mark as slow. */
    static func isOlderDevice() -> Bool {
        var info = utsname()
        uname(&info)
        let id = withUnsafeBytes(of: &info.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return ["iPhone12,1", "iPhone12,8", "iPhone13,1"].contains(id)
    }
}
