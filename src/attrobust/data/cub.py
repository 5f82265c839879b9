"""CUB-200-2011 (Caltech-UCSD Birds, 200 species, 11788 images) with one bird bounding box per image.

Layout of the extracted ``CUB_200_2011.tgz`` (all index files space-separated, one line per image or class)::

    CUB_200_2011/images.txt               <image_id> <relative path under images/>
    CUB_200_2011/image_class_labels.txt   <image_id> <class_id>            (1-based)
    CUB_200_2011/train_test_split.txt     <image_id> <is_training_image>   (1: train, 0: test)
    CUB_200_2011/bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (pixels of the original image)
    CUB_200_2011/classes.txt              <class_id> <NNN.Species_name>
    CUB_200_2011/images/NNN.Species_name/*.jpg

The official split has 5994 training and 5794 test images. Boxes become ``(x, y, x + width, y + height)`` and
follow the resize into the coordinates of the stored images (see :class:`BoxedImageDataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from attrobust._checks import check_choice
from attrobust.data.boxed import BoxedImageDataset
from attrobust.data.images import Decoding, check_size, decode_subset, find_dataset_dir

CUB_DIR = "CUB_200_2011"
CUB_FILES: dict[str, int] = {  # file -> number of fields after the id
    "images.txt": 1,
    "image_class_labels.txt": 1,
    "train_test_split.txt": 1,
    "bounding_boxes.txt": 4,
    "classes.txt": 1,
}
CUB_LAYOUT = (
    f"<data_dir>/{CUB_DIR}/{{images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, "
    "classes.txt, images/<NNN.Species>/*.jpg} (CUB_200_2011.tgz extracted)"
)


def read_cub_table(path: Path, fields: int) -> dict[int, list[str]]:
    """``{id: [field, ...]}`` from a CUB index file with ``fields`` values after the integer id per line.

    Raises ``ValueError`` naming the file and line for a malformed line or a repeated id.
    """
    table: dict[int, list[str]] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        parts = text.split(maxsplit=fields)
        if len(parts) != fields + 1 or not parts[0].isdigit():
            raise ValueError(f"{path}, line {line}: expected '<id>' and {fields} value(s), got {text!r}")
        key = int(parts[0])
        if key in table:
            raise ValueError(f"{path}, line {line}: id {key} appears twice")
        table[key] = parts[1:]
    return table


def cub_class_name(folder: str) -> str:
    """Readable species name: ``"001.Black_footed_Albatross"`` becomes ``"Black footed Albatross"``."""
    stem = folder.split(".", 1)[1] if "." in folder and folder.split(".", 1)[0].isdigit() else folder
    return stem.replace("_", " ")


def cub_index(root: Path, split: str) -> tuple[list[Path], np.ndarray, np.ndarray, tuple[str, ...]]:
    """Paths, int64 labels (class id - 1), float64 boxes ``(N, 4)`` as ``(x0, y0, x1, y1)`` in original pixels,
    and class names of one split, in image-id order.

    Raises ``ValueError`` naming the file when the index files disagree (an image without label, split flag or
    box, a class id not in ``classes.txt``, a negative box size).
    """
    tables = {name: read_cub_table(root / name, n) for name, n in CUB_FILES.items()}
    classes_table = tables["classes.txt"]
    class_ids = sorted(classes_table)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise ValueError(f"{root / 'classes.txt'}: expected class ids 1..{len(class_ids)}, got {class_ids[:5]}...")
    classes = tuple(cub_class_name(classes_table[c][0].strip()) for c in class_ids)
    want = "1" if split == "train" else "0"
    paths, labels, boxes = [], [], []
    for image_id in sorted(tables["images.txt"]):
        for name in ("image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt"):
            if image_id not in tables[name]:
                raise ValueError(f"{root / name}: expected an entry for image id {image_id} (listed in images.txt)")
        if tables["train_test_split.txt"][image_id][0].strip() != want:
            continue
        label = int(tables["image_class_labels.txt"][image_id][0])
        if label not in classes_table:
            raise ValueError(
                f"{root / 'image_class_labels.txt'}: image {image_id} has class {label}, not in classes.txt"
            )
        x, y, w, h = (float(v) for v in tables["bounding_boxes.txt"][image_id])
        if w < 0 or h < 0:
            raise ValueError(
                f"{root / 'bounding_boxes.txt'}: image {image_id}: expected width, height >= 0, got {w}, {h}"
            )
        paths.append(root / "images" / tables["images.txt"][image_id][0].strip())
        labels.append(label - 1)
        boxes.append((x, y, x + w, y + h))
    if not paths:
        raise FileNotFoundError(f"CUB-200-2011: {root / 'train_test_split.txt'} lists no {split} images")
    return paths, np.asarray(labels, dtype=np.int64), np.asarray(boxes, dtype=np.float64), classes


def map_boxes(boxes: np.ndarray, regions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boxes ``(N, 4)`` of the original images mapped through the resize of each source ``regions`` row
    ``(x0, y0, x1, y1)`` to ``size = (H, W)``, clipped to ``[0, W] x [0, H]``; float64 ``(N, 4)``."""
    h, w = size
    sx = w / (regions[:, 2] - regions[:, 0])
    sy = h / (regions[:, 3] - regions[:, 1])
    out = np.empty_like(boxes)
    out[:, 0] = (boxes[:, 0] - regions[:, 0]) * sx
    out[:, 2] = (boxes[:, 2] - regions[:, 0]) * sx
    out[:, 1] = (boxes[:, 1] - regions[:, 1]) * sy
    out[:, 3] = (boxes[:, 3] - regions[:, 1]) * sy
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def load_cub(
    split: str = "train", data_dir: str | Path | None = None, *,
    size: int | Sequence[int] = 224, resize_mode: str = "stretch", limit: int | None = None,
    max_per_class: int | None = None, progress: bool | None = None, workers: int | None = None,
) -> BoxedImageDataset:
    """CUB-200-2011 as a :class:`BoxedImageDataset`: 5994 (``"train"``) or 5794 (``"test"``) images, 200 classes.

    Images are float32 ``(N, 3, H, W)`` in [0, 1] resized with antialiasing to ``size`` (an int or ``(H, W)``;
    default 224) by ``resize_mode`` (``"stretch"``, default, or ``"center_crop"``). Labels int64 ``(N,)`` are
    ``class_id - 1``, named from ``classes.txt`` without the number prefix and underscores. ``boxes`` float32
    ``(N, 4)`` are the bird boxes ``(x0, y0, x1, y1)`` in the pixel coordinates of the stored images (scaled,
    shifted by the crop, clipped to the image). The dataset directory is ``data_dir``, ``data_dir/CUB_200_2011``
    or ``data_dir/cub/CUB_200_2011`` (without ``data_dir``: those subdirectories of ``$ATTROBUST_DATA``).
    ``max_per_class``/``limit`` keep the first examples of each class / overall before decoding; ``progress``
    forces the progress bar on or off (default: on above 1000 files); ``workers`` decoding threads.
    """
    check_choice(split, "split", ("train", "test"))
    how = Decoding(check_size(size), resize_mode, limit, max_per_class, progress, workers)
    required = [*CUB_FILES, "images"]
    root = find_dataset_dir(data_dir, (CUB_DIR, f"cub/{CUB_DIR}", "cub"), required, "CUB-200-2011", CUB_LAYOUT)
    paths, labels, boxes, classes = cub_index(root, split)
    images, targets, keep, regions = decode_subset(paths, labels, how, f"CUB-200-2011 {split}")
    mapped = torch.from_numpy(map_boxes(boxes[keep], regions, how.size)).float()
    return BoxedImageDataset(images, targets, classes, "cub", boxes=mapped)
