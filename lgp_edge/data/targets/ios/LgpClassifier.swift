// LgpClassifier.swift: run an lgp-edge Core ML export (model.mlpackage) in an iOS 16+ app.
//
// Add model.mlpackage to the Xcode target: Xcode compiles it into the app as model.mlmodelc.
// The model does its own normalisation ((pixel / 255 - mean) / std, via the image input's scale and
// bias), so the app only hands it an image; Vision scales it to the model's input size and converts
// it to the model's colour space (grayscale or RGB).
//
//     let url = Bundle.main.url(forResource: "model", withExtension: "mlmodelc")!
//     let classifier = try LgpClassifier(modelURL: url)
//     let top = try classifier.classify(cgImage).first   // (label, probability)

import CoreGraphics
import CoreML
import ImageIO
import Vision

public final class LgpClassifier {
    public let labels: [String]          // class names, index = model output index
    public let descendantKey: String     // which Learngene Pool descendant this is
    public let poolID: String
    private let request: VNCoreMLRequest

    /// `modelURL`: a compiled model (.mlmodelc). Use `compile(packageURL:)` for an .mlpackage
    /// downloaded at run time.
    public init(modelURL: URL, computeUnits: MLComputeUnits = .all) throws {
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits   // .all: Neural Engine, GPU or CPU, as Core ML decides
        let model = try MLModel(contentsOf: modelURL, configuration: config)
        let meta = model.modelDescription.metadata[MLModelMetadataKey.creatorDefinedKey] as? [String: String] ?? [:]
        descendantKey = meta["descendant_key"] ?? "unknown"
        poolID = meta["pool_id"] ?? "unknown"
        labels = (model.modelDescription.classLabels as? [String]) ?? []
        request = VNCoreMLRequest(model: try VNCoreMLModel(for: model))
        // Training resized the whole image to the input size (no crop): do the same.
        request.imageCropAndScaleOption = .scaleFill
    }

    /// Compile an .mlpackage (e.g. downloaded at run time) into a .mlmodelc that `init` can load.
    public static func compile(packageURL: URL) async throws -> URL {
        try await MLModel.compileModel(at: packageURL)
    }

    /// Class probabilities for `image`, most likely first.
    public func classify(_ image: CGImage,
                         orientation: CGImagePropertyOrientation = .up) throws -> [(label: String, probability: Float)] {
        let handler = VNImageRequestHandler(cgImage: image, orientation: orientation, options: [:])
        try handler.perform([request])
        let observations = request.results as? [VNClassificationObservation] ?? []
        return observations.map { (label: $0.identifier, probability: $0.confidence) }
    }

    /// Without Vision: the model's own prediction API on a pixel buffer of the input size
    /// (kCVPixelFormatType_OneComponent8 for grayscale models, 32BGRA for RGB ones).
    public static func classify(pixelBuffer: CVPixelBuffer, model: MLModel) throws -> [String: Double] {
        let input = try MLDictionaryFeatureProvider(dictionary: ["image": MLFeatureValue(pixelBuffer: pixelBuffer)])
        let output = try model.prediction(from: input)
        return output.featureValue(for: "classLabel_probs")?.dictionaryValue as? [String: Double] ?? [:]
    }
}
