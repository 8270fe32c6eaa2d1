#!/usr/bin/env python3
"""Check every function of model.switchable.mlpackage against its torch descendant on a Mac.

Written beside the package by ``lgp-edge export --switchable``; needs ``pip install coremltools pillow numpy``
(coremltools >= 8, macOS 15 for multifunction models).

    python validate_coreml_switchable.py [--model model.switchable.mlpackage] [--data coreml_switchable_validation.npz]

For each function (one per descendant), feeds the validation images as uint8 pixels and compares the
class probabilities with torch's: max |diff| within the precision's tolerance and top-1 agreement.
Exit status 0 when every function passes, 1 otherwise.
"""

import argparse
import json
import sys

TOLERANCE = {"fp16": (2e-2, 0.98), "fp32": (1e-4, 0.99)}  # precision -> (max |prob diff|, min agreement)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="model.switchable.mlpackage")
    p.add_argument("--data", default="coreml_switchable_validation.npz")
    p.add_argument("--compute", default="all", choices=("all", "cpu"), help="compute units (cpu: CPU only)")
    args = p.parse_args(argv)
    if sys.platform != "darwin":
        print("validate_coreml_switchable.py: Core ML predicts on macOS only; run this on a Mac", file=sys.stderr)
        return 2
    import coremltools as ct
    import numpy as np
    from PIL import Image

    data = np.load(args.data)
    pixels, labels = data["pixels"], data["labels"]
    functions = json.loads(str(data["functions"]))  # [[key, function name], ...] in the order of data["probs"]
    class_labels = json.loads(str(data["class_labels"]))
    atol, min_agree = TOLERANCE[str(data["precision"])]
    units = ct.ComputeUnit.ALL if args.compute == "all" else ct.ComputeUnit.CPU_ONLY
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    report, ok = [], True
    for (key, fn), ref in zip(functions, data["probs"]):
        model = ct.models.MLModel(args.model, compute_units=units, function_name=fn)
        probs = []
        for img in pixels:
            out = model.predict({"image": Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode)})
            probs.append([out["classLabel_probs"][c] for c in class_labels])
        probs = np.asarray(probs, dtype=np.float32)
        diff = float(np.abs(probs - ref).max())
        agree = float((probs.argmax(1) == ref.argmax(1)).mean())
        passed = diff <= atol and agree >= min_agree
        ok = ok and passed
        report.append({"key": key, "function": fn, "max_abs_diff": diff, "atol": atol, "top1_agreement": agree,
                       "top1_torch": float((ref.argmax(1) == labels).mean() * 100),
                       "top1_coreml": float((probs.argmax(1) == labels).mean() * 100), "passed": passed})
    print(json.dumps({"images": int(len(pixels)), "functions": report, "passed": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
