"""GTSRB (German Traffic Sign Recognition Benchmark) from the official "final" archives.

Layout (the training, test-image and test-label archives extracted into one directory ``GTSRB/``)::

    GTSRB/Final_Training/Images/00000/00000_00000.ppm ... GT-00000.csv      (classes 00000 ... 00042)
    GTSRB/Final_Test/Images/00000.ppm ...                                    (12630 images)
    GTSRB/GT-final_test.csv   (or GTSRB/Final_Test/, GTSRB/Final_Test/Images/, or beside GTSRB/)

Annotation files are semicolon-separated with the header
``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``. Images vary in size (15x15 to 250x250 pixels)
and are resized to a fixed size (32x32 in the RAR and ART papers), optionally after cropping to the sign's
region of interest ``(Roi.X1, Roi.Y1)``-``(Roi.X2, Roi.Y2)`` (read as continuous coordinates, the second corner
excluded). The official training set has 39209 images; the papers' 34799 training / 4410 validation images are
a split of it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attrobust._checks import check_choice
from attrobust.data.base import ImageDataset
from attrobust.data.images import Box, Decoding, check_size, decode_subset, find_dataset_dir

GTSRB_CLASSES: tuple[str, ...] = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)
GTSRB_HEADER = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
TEST_CSV_PLACES = ("GT-final_test.csv", "Final_Test/GT-final_test.csv", "Final_Test/Images/GT-final_test.csv")
GTSRB_LAYOUT = (
    "<data_dir>/GTSRB/Final_Training/Images/000XX/{*.ppm, GT-000XX.csv} for training and "
    "<data_dir>/GTSRB/Final_Test/Images/*.ppm with <data_dir>/GTSRB/GT-final_test.csv (labels) for testing"
)


def read_gtsrb_csv(path: str | Path) -> list[tuple[str, Box, int]]:
    """Rows ``(filename, roi, class_id)`` of a GTSRB annotation file, ``roi = (x1, y1, x2, y2)`` as floats.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and line for a wrong
    header, a short row, non-integer fields or a class id outside 0..42.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GTSRB annotation file not found: {path} (expected layout: {GTSRB_LAYOUT})")
    rows: list[tuple[str, Box, int]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = tuple(h.strip() for h in next(reader, ()))
        if header[: len(GTSRB_HEADER)] != GTSRB_HEADER:
            raise ValueError(f"{path}: expected header {';'.join(GTSRB_HEADER)}, got {';'.join(header)}")
        for line, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                name = row[0].strip()
                x1, y1, x2, y2, cls = (int(v) for v in row[3:8])
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {line}: expected 8 fields {GTSRB_HEADER}, got {row}") from None
            if not 0 <= cls < len(GTSRB_CLASSES):
                raise ValueError(f"{path}, line {line}: expected ClassId in 0..{len(GTSRB_CLASSES) - 1}, got {cls}")
            rows.append((name, (float(x1), float(y1), float(x2), float(y2)), cls))
    return rows


def gtsrb_index(root: Path, split: str) -> tuple[list[Path], list[Box], np.ndarray]:
    """Image paths, regions of interest and int64 labels of one split (training: class by class, each in its
    annotation file's order; test: the order of ``GT-final_test.csv``)."""
    if split == "train":
        images_dir = root / "Final_Training" / "Images"
        class_dirs = sorted(p for p in images_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if not class_dirs:
            raise FileNotFoundError(f"GTSRB: expected class folders 00000 ... 00042 in {images_dir}, found none")
        rows = [(d / name, roi, cls) for d in class_dirs for name, roi, cls in read_gtsrb_csv(d / f"GT-{d.name}.csv")]
    else:
        places = [root / p for p in TEST_CSV_PLACES] + [root.parent / TEST_CSV_PLACES[0]]
        csv_path = next((p for p in places if p.is_file()), None)
        if csv_path is None:
            raise FileNotFoundError(
                f"GTSRB: test labels GT-final_test.csv not found; expected it at one of: "
                f"{', '.join(map(str, places))} (it comes in GTSRB_Final_Test_GT.zip; the GT-final_test.test.csv "
                "shipped with the images has no labels)"
            )
        rows = [(root / "Final_Test" / "Images" / name, roi, cls) for name, roi, cls in read_gtsrb_csv(csv_path)]
    if not rows:
        raise FileNotFoundError(f"GTSRB: the {split} annotation files of {root} list no images")
    paths, rois, labels = zip(*rows, strict=True)
    return list(paths), list(rois), np.asarray(labels, dtype=np.int64)


def load_gtsrb(
    split: str = "train", data_dir: str | Path | None = None, *,
    size: int | Sequence[int] = 32, crop_roi: bool = False, resize_mode: str = "stretch", limit: int | None = None,
    max_per_class: int | None = None, progress: bool | None = None, workers: int | None = None,
) -> ImageDataset:
    """GTSRB as an :class:`ImageDataset`: 39209 (``"train"``) or 12630 (``"test"``) images of 43 classes.

    Images are float32 ``(N, 3, H, W)`` in [0, 1], resized with antialiasing to ``size`` (an int or
    ``(H, W)``; default 32 as in the papers), after cropping to the annotated sign region when ``crop_roi``.
    ``resize_mode`` is ``"stretch"`` (whole region) or ``"center_crop"`` (largest centred region of the target
    aspect ratio). Labels int64 ``(N,)`` in 0..42 named by ``GTSRB_CLASSES``. The dataset directory is
    ``data_dir``, ``data_dir/GTSRB`` or ``data_dir/gtsrb`` (without ``data_dir``: ``$ATTROBUST_DATA/GTSRB`` or
    ``.../gtsrb``). ``max_per_class``/``limit`` keep the first examples of each class / overall before decoding;
    ``progress`` forces the progress bar on or off (default: on above 1000 files); ``workers`` decoding threads.
    """
    check_choice(split, "split", ("train", "test"))
    how = Decoding(check_size(size), resize_mode, limit, max_per_class, progress, workers)
    required = ["Final_Training/Images"] if split == "train" else ["Final_Test/Images"]
    root = find_dataset_dir(data_dir, ("GTSRB", "gtsrb"), required, "GTSRB", GTSRB_LAYOUT)
    paths, rois, labels = gtsrb_index(root, split)
    images, targets, _, _ = decode_subset(paths, labels, how, f"GTSRB {split}", rois if crop_roi else None)
    return ImageDataset(images, targets, GTSRB_CLASSES, "gtsrb")
