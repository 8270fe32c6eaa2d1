"""Datasets: ``fashion-mnist`` (Debian's IDX files), ``imagefolder:PATH`` (ImageNet layout), ``synthetic``.

``open_data(name, img_size, in_chans)`` returns train and validation ``Dataset``s of
``(normalised float tensor C x H x W, int label)`` and a ``DataInfo`` with the preprocessing an app
must repeat. Fashion-MNIST's test split is the validation set.
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lgp_edge.data_sources import (  # noqa: F401 (re-exported: the data's names are checked through this module too)
    FMNIST_DEFAULT_DIR,
    IMAGE_SUFFIXES,
    SYNTHETIC_TRAIN,
    check_data_name,
    fmnist_dir,
    fmnist_files,
    imagefolder_root,
    training_images,
)
from lgp_edge.errors import DataError, UsageError
from lgp_edge.fileio import imagefolder_path
from lgp_edge.specs import PreprocessSpec

log = logging.getLogger(__name__)

FMNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # over the training images, pixel values in 0..1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Norm = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel, pixel values in 0..1


@dataclass(frozen=True)
class DataInfo:
    name: str  # "fashion-mnist", "imagefolder:/path", "synthetic"
    num_classes: int  # label count
    preprocess: PreprocessSpec  # size, channels, mean/std, labels
    synthetic: bool  # random tensors: results mean nothing


@dataclass(frozen=True)
class ImageData:
    train: Dataset
    val: Dataset
    info: DataInfo


def _unreadable(path: Path, why: str) -> DataError:
    return DataError(f"'{path}' is not a readable Fashion-MNIST IDX file ({why}); reinstall dataset-fashion-mnist "
                     "('sudo apt-get install --reinstall dataset-fashion-mnist') or point LGP_EDGE_DATA at good "
                     "copies")


def _read_idx(path: Path) -> torch.Tensor:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except EOFError:  # a gzip stream cut short
        raise _unreadable(path, "its gzip stream ends early") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        why = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise _unreadable(path, f"not a gzip file: {why}") from None
    if len(raw) < 4:
        raise _unreadable(path, f"{len(raw)} bytes, shorter than the 4-byte IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(f"'{path}' is not an IDX file of unsigned bytes")
    if len(raw) < 4 + 4 * ndim:
        raise _unreadable(path, f"{len(raw)} bytes, shorter than the IDX header of {ndim} dimensions")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    if data.numel() != int(torch.tensor(dims).prod()):
        raise DataError(f"'{path}' is truncated ({data.numel()} bytes for shape {dims})")
    return data.reshape(dims)


def _fmnist_split(root: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images (N, H, W) and labels (N,), refused unless they belong together: as many labels as
    images, each one of the 10 classes (a labels file of another split or cut short would drop or misalign
    images, and a label out of range would count as wrong, silently)."""
    images_path, labels_path = fmnist_files(root, prefix)
    images, labels = _read_idx(images_path), _read_idx(labels_path).long()
    if images.ndim != 3:
        raise _unreadable(images_path, f"images of shape {tuple(images.shape)}, not (N, height, width)")
    if labels.ndim != 1:
        raise _unreadable(labels_path, f"labels of shape {tuple(labels.shape)}, not (N,)")
    if len(images) != len(labels):
        raise _unreadable(labels_path, f"{len(images)} images and {len(labels)} labels in the '{prefix}' split")
    if len(labels) and int(labels.max()) >= len(FMNIST_LABELS):
        raise _unreadable(labels_path, f"label {int(labels.max())}, not one of the {len(FMNIST_LABELS)} classes")
    return images, labels


class TensorImages(Dataset):
    """uint8 images (N, H, W) or (N, C, H, W) in memory, resized, normalised and optionally augmented."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, img_size: int, in_chans: int,
                 mean: tuple[float, ...], std: tuple[float, ...], train: bool) -> None:
        if images.ndim == 3:
            images = images.unsqueeze(1)
        self.images, self.labels = images, labels
        self.img_size, self.in_chans, self.train = img_size, in_chans, train
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def transform(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float() / 255.0
        if x.shape[0] != self.in_chans:
            x = x.expand(self.in_chans, -1, -1) if x.shape[0] == 1 else x.mean(0, keepdim=True)
        if x.shape[-1] != self.img_size:
            x = F.interpolate(x[None], size=(self.img_size, self.img_size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        if self.train:  # light augmentation: random shift by up to 2 px, horizontal flip
            pad = 2
            x = F.pad(x, (pad, pad, pad, pad))
            i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
            x = x[:, i:i + self.img_size, j:j + self.img_size]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return (x - self.mean) / self.std

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[idx]), int(self.labels[idx])


def _fashion_mnist(img_size: int, in_chans: int) -> ImageData:
    root = fmnist_dir()
    (xtr, ytr), (xva, yva) = _fmnist_split(root, "train"), _fmnist_split(root, "t10k")
    mean, std = (FMNIST_MEAN,) * in_chans, (FMNIST_STD,) * in_chans
    pre = PreprocessSpec(img_size=img_size, in_chans=in_chans, mean=mean, std=std, labels=FMNIST_LABELS)
    kw = dict(img_size=img_size, in_chans=in_chans, mean=mean, std=std)
    return ImageData(TensorImages(xtr, ytr, train=True, **kw), TensorImages(xva, yva, train=False, **kw),
                     DataInfo("fashion-mnist", 10, pre, synthetic=False))


def _synthetic(img_size: int, in_chans: int, num_classes: int, n_train: int = SYNTHETIC_TRAIN,
               n_val: int = 256) -> ImageData:
    g = torch.Generator().manual_seed(0)
    xtr = torch.randint(0, 256, (n_train, in_chans, img_size, img_size), generator=g, dtype=torch.uint8)
    xva = torch.randint(0, 256, (n_val, in_chans, img_size, img_size), generator=g, dtype=torch.uint8)
    ytr = torch.randint(0, num_classes, (n_train,), generator=g)
    yva = torch.randint(0, num_classes, (n_val,), generator=g)
    mean, std = (0.5,) * in_chans, (0.29,) * in_chans
    labels = tuple(f"class_{i}" for i in range(num_classes))
    pre = PreprocessSpec(img_size=img_size, in_chans=in_chans, mean=mean, std=std, labels=labels)
    kw = dict(img_size=img_size, in_chans=in_chans, mean=mean, std=std)
    return ImageData(TensorImages(xtr, ytr, train=True, **kw), TensorImages(xva, yva, train=False, **kw),
                     DataInfo("synthetic", num_classes, pre, synthetic=True))


def load_image(path: str) -> Any:
    """Open one image as RGB; a damaged or empty file is a one-line DataError naming it. 16-bit images are
    scaled to 8 bits (PIL's RGB conversion clips them: 99.5% of a 16-bit PNG came out 255), float ones too."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            if img.mode.startswith("I"):  # 16- or 32-bit integer grayscale: 0..65535 -> 0..255
                import numpy as np

                deep = np.asarray(img, dtype=np.float64)
                img = Image.fromarray(np.clip(np.rint(deep / 257.0), 0, 255).astype(np.uint8))
            elif img.mode == "F":  # 32-bit float grayscale: PIL's conversion clips 0..1 to black
                img = _float_image(img, path)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"image '{path}' cannot be read ({str(exc).splitlines()[0][:120] or type(exc).__name__}); "
                        "replace or remove it") from None


def _float_image(img: Any, path: str) -> Any:
    """A float grayscale image (mode F) as 8 bits: values in 0..1 scaled by 255, values in 0..255 kept; any other
    range is a DataError (which scale it is in cannot be told)."""
    import numpy as np
    from PIL import Image

    v = np.asarray(img, dtype=np.float64)
    if not np.isfinite(v).all() or v.min() < 0.0 or v.max() > 255.0:
        raise DataError(f"image '{path}' holds float values outside 0..1 and 0..255 (or NaN); save it as an 8- or "
                        "16-bit image")
    scale = 255.0 if v.max() <= 1.0 else 1.0
    return Image.fromarray(np.clip(np.rint(v * scale), 0, 255).astype(np.uint8))


def _whole_image(img_size: int, norm: Norm = (IMAGENET_MEAN, IMAGENET_STD)) -> Any:
    """What an exported model's manifest tells an app to do, so that every recorded top-1 is the app's: the
    whole image resized to img_size x img_size (bilinear, no crop), then (pixel / 255 - mean) / std. timm's
    eval transform (resize, then a center crop) made the pool's top-1 82.5% where an app following the
    manifest got 69.3%."""
    from torchvision import transforms

    bilinear = transforms.InterpolationMode.BILINEAR
    return transforms.Compose([transforms.Resize((img_size, img_size), interpolation=bilinear),
                               transforms.ToTensor(), transforms.Normalize(*norm)])


def _imagefolder(root: str, img_size: int, in_chans: int, norm: Norm | None = None) -> ImageData:
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    base = imagefolder_root(root)
    if in_chans != 3:
        raise UsageError(f"imagefolder data is RGB; the ancestry takes {in_chans} channel(s)")
    mean, std = norm or (IMAGENET_MEAN, IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise UsageError(f"an RGB image folder needs 3 means and 3 positive stds, the model has {mean} / {std}")
    # DeiT's RandAugment with the magnitude capped at 9: at 10 timm asks Pillow to posterize to 0 bits, which
    # Pillow 13 refuses (training crashed within two epochs of 1,200 images)
    train = ImageFolder(str(base / "train"), transform=create_transform(img_size, is_training=True,
                                                                         auto_augment="rand-m9-mstd0.5-inc1-mmax9",
                                                                         mean=tuple(mean), std=tuple(std)),
                        loader=load_image)
    val = ImageFolder(str(base / "val"), transform=_whole_image(img_size, (tuple(mean), tuple(std))),
                      loader=load_image)
    labels = tuple(train.classes)
    from lgp_edge.pool.manifest import label_problem

    for name in labels:  # written into pool.json and every export's metadata: refused before any work
        problem = label_problem(name)
        if problem:
            raise UsageError(f"image folder '{base}': class folder {name!r} cannot name a class ({problem}); "
                             "rename the folder")
    pre = PreprocessSpec(img_size=img_size, in_chans=3, mean=tuple(mean), std=tuple(std), labels=labels)
    return ImageData(train, val, DataInfo(f"imagefolder:{base}", len(labels), pre, synthetic=False))


def data_channels(name: str, model_chans: int) -> int:
    """The channels a dataset's images have: Fashion-MNIST 1, an image folder 3 (read as RGB), synthetic data
    whatever the model takes."""
    if name == "fashion-mnist":
        return 1
    if name.startswith("imagefolder:"):
        return 3
    return model_chans


def open_data(name: str, *, img_size: int, in_chans: int, num_classes: int = 10, norm: Norm | None = None) -> ImageData:
    """Open a dataset by its CLI name, at the model's input size and channels. ``norm``: the (mean, std) the model
    takes for an image folder (a pretrained ancestry's own, a pool's recorded one; ``model_norm``), ImageNet's
    when None; Fashion-MNIST and synthetic data have their own."""
    if name == "fashion-mnist":
        return _fashion_mnist(img_size, in_chans)
    if name == "synthetic":
        log.warning("synthetic data: random images and labels; accuracies mean nothing")
        return _synthetic(img_size, in_chans, num_classes)
    if name.startswith("imagefolder:"):
        return _imagefolder(imagefolder_path(name), img_size, in_chans, norm)
    raise UsageError(f"unknown --data '{name}'; use fashion-mnist, imagefolder:PATH or synthetic")


def model_norm(model: Any, name: str, meta: dict[str, Any] | None) -> Norm | None:
    """The (mean, std) an ancestry was trained with: its ``ancestry.json``'s (``ancestry train``), else a stock
    timm model's ``pretrained_cfg`` (a pretrained ViT keeps its own: augreg ViTs 0.5 / 0.5, CLIP's, ImageNet's
    for DeiT); None for the small variants without one, which take the dataset's."""
    from lgp_edge.models.variants import SMALL_VARIANTS

    pre = (meta or {}).get("preprocess")
    if isinstance(pre, dict) and isinstance(pre.get("mean"), list) and isinstance(pre.get("std"), list):
        return tuple(float(v) for v in pre["mean"]), tuple(float(v) for v in pre["std"])
    if name in SMALL_VARIANTS:
        return None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean and std and len(mean) == len(std):
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return None


def open_for_ancestry(name: str, model: Any, aspec: Any, meta: dict[str, Any] | None) -> ImageData:
    """``name`` opened for training from the ancestry ``model`` (spec ``aspec``, ``ancestry.json`` ``meta``): at
    its input size and channels, normalised as it was trained (``model_norm``), with its class count and, when
    its ``ancestry.json`` records them, its classes in its order (distilling from logits of other classes, or
    of the same classes in another order, trains every student against the wrong labels, silently)."""
    data = open_data(name, img_size=aspec.img_size, in_chans=aspec.in_chans, num_classes=aspec.num_classes,
                     norm=model_norm(model, aspec.name, meta))
    if data.info.num_classes != aspec.num_classes:
        raise UsageError(f"--data {name} has {data.info.num_classes} classes, ancestry '{aspec.name}' "
                         f"{aspec.num_classes}; fine-tune it on the data first: lgp-edge ancestry train --ancestry "
                         f"{aspec.name} --initial-checkpoint {aspec.checkpoint or 'FILE'} --data {name} --out DIR")
    check_recorded_labels(data.info, meta)
    return data


def check_recorded_labels(info: DataInfo, meta: dict[str, Any] | None) -> None:
    """``check_labels`` against the classes an ``ancestry.json`` (``meta``) records, when it records them."""
    pre = (meta or {}).get("preprocess")
    if isinstance(pre, dict) and isinstance(pre.get("labels"), list):
        check_labels(info, tuple(pre["labels"]), str((meta or {}).get("data", "its ancestry.json")))


def open_for_pool(name: str, manifest: Any) -> ImageData:
    """``name`` opened for a pool (its ``PoolManifest``): at its ancestry's input size, channels and classes,
    normalised as its pool.json records, and refused when its classes or their order differ from the pool's
    (its logits would be scored, or trained, against other labels, silently)."""
    a, pre = manifest.spec.ancestry, manifest.preprocess
    data = open_data(name, img_size=a.img_size, in_chans=a.in_chans, num_classes=a.num_classes,
                     norm=(tuple(pre.mean), tuple(pre.std)))
    check_labels(data.info, pre.labels, manifest.data)
    return data


def open_for_training_pool(name: str, manifest: Any, command: str) -> ImageData:
    """``open_for_pool`` for a command that trains the pool in place (``pool finetune``, ``pool stitch``): synthetic
    images are refused for a pool trained on real data, whose weights they would replace with ones fitted to noise
    while its pool.json still named the real data."""
    refuse_synthetic_for_training(name, manifest, command)
    return open_for_pool(name, manifest)


def refuse_synthetic_for_training(name: str, manifest: Any, command: str) -> None:
    """``open_for_training_pool``'s refusal of synthetic images, from pool.json alone (before the weights)."""
    refuse_synthetic_in_place(name, manifest, f"{command} trains the pool in place",
                              "would replace its weights with ones fitted to noise")


def refuse_synthetic_in_place(name: str, manifest: Any, does: str, harm: str) -> None:
    """UsageError when ``name`` is synthetic and the pool, which the command writes into, was trained on real data
    (``does``: what the command does to the pool; ``harm``: what synthetic images would do to it)."""
    if name == "synthetic" and manifest.data != "synthetic":
        raise UsageError(f"{does}, and it was trained on {manifest.data}: synthetic images {harm}; use --data "
                         f"{manifest.data} (a smoke test on synthetic images needs a pool built on them: "
                         "'lgp-edge pool build --data synthetic --allow-random-ancestry ...')")


def check_labels(info: DataInfo, labels: tuple[str, ...], model_data: str) -> None:
    """Real data must have the classes, in the order, that the model was trained on (``labels``, from
    ``model_data``); otherwise its logits are scored against other labels and the top-1 is silently wrong
    (a renamed class folder reordered the classes and pool eval stored 10.75%). Synthetic data on either side
    is a numerical check only and is not compared."""
    if info.synthetic or model_data == "synthetic" or not labels:
        return
    if tuple(info.preprocess.labels) != tuple(labels):
        theirs, ours = list(info.preprocess.labels), list(labels)
        raise UsageError(f"--data {info.name} has the classes {theirs[:6]}{' ...' if len(theirs) > 6 else ''} "
                         f"({len(theirs)}), the model was trained on {ours[:6]}{' ...' if len(ours) > 6 else ''} "
                         f"({len(ours)}, {model_data}): use data with the model's classes, in that order")


