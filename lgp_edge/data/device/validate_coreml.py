#!/usr/bin/env python3
"""Check model.mlpackage against the torch descendant on a Mac (Core ML predicts on macOS only).

Written beside the model by ``lgp-edge export``; needs ``pip install coremltools pillow numpy``.

    python validate_coreml.py [--model model.mlpackage] [--data coreml_validation.npz] [--compute all|cpu]

Feeds each validation image (uint8 pixels, exactly what an app would pass) to the model and compares its
class probabilities with torch's: max |diff| within the precision's tolerance and top-1 agreement.
Exit status 0 when the model passes, 1 when it does not.
"""

import argparse
import json
import sys

TOLERANCE = {"fp16": (2e-2, 0.98), "fp32": (1e-4, 0.99)}  # precision -> (max |prob diff|, min agreement)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="model.mlpackage")
    p.add_argument("--data", default="coreml_validation.npz")
    p.add_argument("--compute", default="all", choices=("all", "cpu"), help="compute units (cpu: CPU only)")
    args = p.parse_args(argv)
    if sys.platform != "darwin":
        print("validate_coreml.py: Core ML predicts on macOS only; run this on a Mac", file=sys.stderr)
        return 2
    import coremltools as ct
    import numpy as np
    from PIL import Image

    data = np.load(args.data)
    pixels, ref, labels = data["pixels"], data["probs"], data["labels"]
    class_labels = json.loads(str(data["class_labels"]))
    atol, min_agree = TOLERANCE[str(data["precision"])]
    units = ct.ComputeUnit.ALL if args.compute == "all" else ct.ComputeUnit.CPU_ONLY
    model = ct.models.MLModel(args.model, compute_units=units)
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    probs = []
    for img in pixels:
        arr = img[..., 0] if mode == "L" else img
        out = model.predict({"image": Image.fromarray(arr, mode=mode)})
        d = out["classLabel_probs"]
        probs.append([d[c] for c in class_labels])
    probs = np.asarray(probs, dtype=np.float32)
    diff = float(np.abs(probs - ref).max())
    agree = float((probs.argmax(1) == ref.argmax(1)).mean())
    top1_ref = float((ref.argmax(1) == labels).mean() * 100)
    top1_ml = float((probs.argmax(1) == labels).mean() * 100)
    ok = diff <= atol and agree >= min_agree
    print(json.dumps({"images": len(probs), "max_abs_diff": diff, "atol": atol, "top1_agreement": agree,
                      "min_agreement": min_agree, "top1_torch": top1_ref, "top1_coreml": top1_ml, "passed": ok},
                     indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
