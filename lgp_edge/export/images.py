"""The images every export is validated on (and int8 calibrated on): fixed random subsets of real data.

Validation images come from the dataset's validation split in a fixed order (seed 0); int8 calibration
images come from the training split (seed 1, without training augmentation): real images of the data the
model learned from, never validation images.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from lgp_edge.errors import UsageError
from lgp_edge.progress import NULL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSets:
    """Validation and calibration images for one export."""

    images: np.ndarray  # float32 (N, C, H, W), normalised: validation images
    labels: np.ndarray  # int64 (N,)
    calibration: np.ndarray  # float32 (M, C, H, W): int8 calibration images, training split (M may be 0)
    data: str  # dataset name
    synthetic: bool  # random images: agreement is a numerical check only, top-1 means nothing


def default_data(pool_data: str, data: str | None) -> str:
    """The validation dataset: --data, else the pool's own (fashion-mnist, imagefolder:…, synthetic)."""
    if data is not None:
        return data
    if pool_data in ("fashion-mnist", "synthetic") or pool_data.startswith("imagefolder:"):
        return pool_data
    raise UsageError(f"the pool was trained on '{pool_data}', which cannot be opened for validation; pass --data")


def _plain_view(ds: Any, val: Any) -> Any:
    """The training set without augmentation: TensorImages' ``train`` flag off, or (an ImageFolder) the
    validation split's transform."""
    if hasattr(ds, "train") and isinstance(ds.train, bool):
        view = copy.copy(ds)
        view.train = False
        return view
    if hasattr(ds, "transform") and hasattr(val, "transform"):
        view = copy.copy(ds)
        view.transform = val.transform
        return view
    return ds


def _stack(ds: Any, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(ds[i] for i in idx))
    return np.stack([x.numpy() for x in xs]).astype(np.float32), np.asarray(ys, dtype=np.int64)


def _calibration(data: Any, n_cal: int, data_name: str) -> np.ndarray:
    """``n_cal`` training images, in a fixed random order, without augmentation."""
    import torch

    train = _plain_view(data.train, data.val)
    tperm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1)).tolist()
    if len(tperm) < n_cal:
        raise UsageError(f"int8 calibration needs {n_cal} images; '{data_name}' has {len(tperm)} training images")
    return _stack(train, tperm[:n_cal])[0]


def load_images(data_name: str, pre: Any, num_classes: int, n_val: int, n_cal: int, pool_data: str,
                reporter: Any = NULL) -> ImageSets:
    """``n_val`` validation images and ``n_cal`` calibration images of ``data_name``, preprocessed as ``pre``."""
    import torch

    from lgp_edge.datasets import check_data_name, check_labels, open_data
    from lgp_edge.export.validate import FEW_IMAGES

    check_data_name(data_name)
    data = open_data(data_name, img_size=pre.img_size, in_chans=pre.in_chans, num_classes=num_classes,
                     norm=(tuple(pre.mean), tuple(pre.std)))
    check_labels(data.info, tuple(pre.labels), pool_data)
    dpre = data.info.preprocess
    if not data.info.synthetic and (tuple(dpre.mean) != tuple(pre.mean) or tuple(dpre.std) != tuple(pre.std)):
        if data_name == pool_data:  # the model was trained and scored on these images as the dataset normalises them
            raise UsageError(f"the preprocessing recorded with the model (pool.json or the model's metadata: mean "
                             f"{tuple(pre.mean)} / std {tuple(pre.std)}) is not the one {data_name} normalises with "
                             f"(mean {tuple(dpre.mean)} / std {tuple(dpre.std)}), which the model was trained and "
                             "scored with: the artifact would tell an app to feed other inputs; fix the recorded "
                             "preprocessing")
        log.warning("--data %s normalises with mean %s / std %s, the pool with %s / %s (pool data: %s)", data_name,
                    dpre.mean, dpre.std, pre.mean, pre.std, pool_data)
    perm = torch.randperm(len(data.val), generator=torch.Generator().manual_seed(0)).tolist()
    if n_val > len(perm):
        log.warning("--val-images %d > %d validation images; using all", n_val, len(perm))
        n_val = len(perm)
    if n_val < FEW_IMAGES:
        log.warning("only %d validation images: a check on fewer than %d says little (an error that only "
                    "some inputs show passes); give --val-images %d or more", n_val, FEW_IMAGES, FEW_IMAGES)
    with reporter.task(f"load {n_val} validation images ({data_name})", total=1) as task:
        x, y = _stack(data.val, perm[:n_val])
        task.advance()
    if n_cal:
        with reporter.task(f"load {n_cal} int8 calibration images ({data_name}, training split)", total=1) as task:
            cal = _calibration(data, n_cal, data_name)
            task.advance()
    else:
        cal = np.zeros((0, *x.shape[1:]), np.float32)
    return ImageSets(images=x, labels=y, calibration=cal, data=data_name, synthetic=data.info.synthetic)
