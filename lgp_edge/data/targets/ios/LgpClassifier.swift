// LgpClassifier.swift: run an lgp-edge Core ML export (model.mlpackage) in an iOS 17+ app
// (the model's minimum deployment target: iOS 17 / macOS 14).
//
// Add model.mlpackage to the Xcode target: Xcode compiles it into the app as model.mlmodelc.
// The model's input is an image named `image` (size x size pixels, grayscale or RGB); it does its own
// normalisation ((pixel / 255 - mean) / std: the image input's scale and bias, and for per-channel stds
// its first operations), and it outputs
// `classLabel` (the best class) and `classLabel_probs` (class -> probability). This class resizes the
// whole image to the input size (no crop, as in training) and, for a grayscale model, converts it to
// gray as the mean of R, G and B: the conversion the training data loader, EMBEDDING.md and the Kotlin
// sample use (Vision's own conversion would weight by luminance, so it is not used here).
//
//     let url = Bundle.main.url(forResource: "model", withExtension: "mlmodelc")!
//     let classifier = try LgpClassifier(modelURL: url)
//     let top = try classifier.classify(cgImage).first   // (label, probability)

import CoreGraphics
import CoreML
import CoreVideo

public enum LgpClassifierError: Error {
    case noImageInput, pixelBuffer(CVReturn), drawing
}

public final class LgpClassifier {
    public let labels: [String]          // class names, index = model output index
    public let descendantKey: String     // which Learngene Pool descendant this is
    public let poolID: String
    public let size: Int                 // square input side, pixels
    public let grayscale: Bool           // true: one channel (mean of R, G and B)
    private let model: MLModel
    private let inputName: String        // "image"
    private let probabilitiesName: String  // "classLabel_probs"

    /// `modelURL`: a compiled model (.mlmodelc). Use `compile(packageURL:)` for an .mlpackage
    /// downloaded at run time.
    public init(modelURL: URL, computeUnits: MLComputeUnits = .all) throws {
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits   // .all: Neural Engine, GPU or CPU, as Core ML decides
        model = try MLModel(contentsOf: modelURL, configuration: config)
        let description = model.modelDescription
        let meta = description.metadata[MLModelMetadataKey.creatorDefinedKey] as? [String: String] ?? [:]
        descendantKey = meta["descendant_key"] ?? "unknown"
        poolID = meta["pool_id"] ?? "unknown"
        labels = (description.classLabels as? [String]) ?? []
        guard let input = description.inputDescriptionsByName.values.first(where: { $0.type == .image }),
              let constraint = input.imageConstraint else { throw LgpClassifierError.noImageInput }
        inputName = input.name                                        // "image"
        size = constraint.pixelsWide
        grayscale = constraint.pixelFormatType == kCVPixelFormatType_OneComponent8
        probabilitiesName = description.predictedProbabilitiesName ?? "classLabel_probs"
    }

    /// Compile an .mlpackage (e.g. downloaded at run time) into a .mlmodelc that `init` can load.
    public static func compile(packageURL: URL) async throws -> URL {
        try await MLModel.compileModel(at: packageURL)
    }

    /// Class probabilities for `image`, most likely first.
    public func classify(_ image: CGImage) throws -> [(label: String, probability: Double)] {
        let buffer = try pixelBuffer(from: image)
        let input = try MLDictionaryFeatureProvider(dictionary: [inputName: MLFeatureValue(pixelBuffer: buffer)])
        let output = try model.prediction(from: input)
        let probs = output.featureValue(for: probabilitiesName)?.dictionaryValue as? [String: Double] ?? [:]
        return probs.map { (label: $0.key, probability: $0.value) }.sorted { $0.probability > $1.probability }
    }

    /// The whole image resized to size x size (bilinear-quality interpolation, no crop), as the model's
    /// pixel buffer: OneComponent8 holding (R + G + B) / 3 for grayscale models, 32BGRA for RGB ones.
    public func pixelBuffer(from image: CGImage) throws -> CVPixelBuffer {
        var rgba = [UInt8](repeating: 0, count: size * size * 4)
        let drawn: Bool = rgba.withUnsafeMutableBytes { raw in
            guard let ctx = CGContext(data: raw.baseAddress, width: size, height: size, bitsPerComponent: 8,
                                      bytesPerRow: size * 4, space: CGColorSpaceCreateDeviceRGB(),
                                      bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            ctx.interpolationQuality = .high
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: size, height: size))
            return true
        }
        guard drawn else { throw LgpClassifierError.drawing }
        let format = grayscale ? kCVPixelFormatType_OneComponent8 : kCVPixelFormatType_32BGRA
        var out: CVPixelBuffer?
        let status = CVPixelBufferCreate(nil, size, size, format, nil, &out)
        guard status == kCVReturnSuccess, let buffer = out else { throw LgpClassifierError.pixelBuffer(status) }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let base = CVPixelBufferGetBaseAddress(buffer)!.assumingMemoryBound(to: UInt8.self)
        for y in 0..<size {
            for x in 0..<size {
                let p = (y * size + x) * 4
                let (r, g, b) = (Int(rgba[p]), Int(rgba[p + 1]), Int(rgba[p + 2]))
                if grayscale {
                    base[y * rowBytes + x] = UInt8((r + g + b) / 3)   // the mean of R, G and B
                } else {
                    let q = y * rowBytes + x * 4                       // BGRA
                    base[q] = UInt8(b); base[q + 1] = UInt8(g); base[q + 2] = UInt8(r); base[q + 3] = 255
                }
            }
        }
        return buffer
    }
}
