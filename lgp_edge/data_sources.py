"""Which data a ``--data`` name means and where its files are, checked without torch (``lgp_edge.datasets``
loads them): ``fashion-mnist`` (Debian's IDX files, or ``$LGP_EDGE_DATA``), ``imagefolder:PATH`` (ImageNet
layout), ``synthetic``."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

from lgp_edge.errors import DataError, UsageError
from lgp_edge.fileio import imagefolder_path

FMNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
SYNTHETIC_TRAIN = 512  # training images of --data synthetic


def fmnist_dir() -> Path:
    return Path(os.environ.get("LGP_EDGE_DATA", FMNIST_DEFAULT_DIR))


def fmnist_files(root: Path, prefix: str) -> tuple[Path, Path]:
    """The images and labels files of one split; DataError naming the apt package if either is missing."""
    images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    for f in (images, labels):
        if not f.is_file():
            raise DataError(f"Fashion-MNIST not found ({f} is missing): run 'sudo apt-get install -y "
                            "dataset-fashion-mnist' or set LGP_EDGE_DATA to a directory with the IDX .gz files")
    return images, labels


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _has_image(folder: Path) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(f.lower().endswith(IMAGE_SUFFIXES) for f in files):
            return True
    return False


def _split_classes(base: Path, split: str) -> list[str]:
    d = base / split
    classes = sorted(e.name for e in d.iterdir() if e.is_dir())
    if not classes:
        raise DataError(f"imagefolder split '{d}' has no class folders; put each class's images in "
                        f"'{d}/CLASS/'")
    for c in classes:
        if not _has_image(d / c):
            raise DataError(f"imagefolder class folder '{d / c}' holds no images "
                            f"({', '.join(IMAGE_SUFFIXES[:3])}, …); add images or remove the folder")
    return classes


def imagefolder_root(root: str) -> Path:
    """The dataset root after checking train/ and val/: both present, same classes, each with images."""
    base = Path(root)
    for split in ("train", "val"):
        if not (base / split).is_dir():
            raise DataError(f"imagefolder '{base}' needs train/ and val/ subfolders (ImageNet layout); "
                            f"'{base / split}' is missing")
    train, val = _split_classes(base, "train"), _split_classes(base, "val")
    if train != val:
        odd = sorted(set(train) ^ set(val))
        raise DataError(f"imagefolder '{base}': train/ and val/ must hold the same class folders; "
                        f"'{odd[0]}' is in only one of them")
    return base


def training_images(name: str) -> int | None:
    """How many training images ``name`` has, known before any image is read: Fashion-MNIST's from its labels
    file's IDX header, synthetic data's fixed count, an image folder's train/ files that its loader takes (the
    same walk and extensions as torchvision's ImageFolder; no image is opened); None for data that cannot be
    read (opening it says why)."""
    if name == "synthetic":
        return SYNTHETIC_TRAIN
    if name.startswith("imagefolder:"):
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        train = str(Path(imagefolder_path(name)) / "train")
        try:
            return len(make_dataset(train, find_classes(train)[1], extensions=IMG_EXTENSIONS))
        except (OSError, RuntimeError):  # no such folder, or no class folder or image in it
            return None
    if name != "fashion-mnist":
        return None
    try:
        _, labels = fmnist_files(fmnist_dir(), "train")
        with gzip.open(labels, "rb") as f:
            head = f.read(8)
    except (DataError, OSError, EOFError, zlib.error):
        return None
    if len(head) < 8 or head[:4] != b"\x00\x00\x08\x01":  # unsigned bytes, one dimension
        return None
    return struct.unpack(">I", head[4:])[0]


def check_data_name(name: str) -> None:
    """Validate a --data value before any work (and before any output is created)."""
    if name == "fashion-mnist":
        for prefix in ("train", "t10k"):
            fmnist_files(fmnist_dir(), prefix)
    elif name.startswith("imagefolder:"):
        imagefolder_root(imagefolder_path(name))
    elif name != "synthetic":
        raise UsageError(f"unknown --data '{name}'; use fashion-mnist, imagefolder:PATH or synthetic")
