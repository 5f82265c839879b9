"""Weakly supervised object localisation from attribution maps (ART paper, sec. 4.2, the CUB protocol of ADL).

A map is turned into a box: grayscale (``|a|`` summed over channels), min-max normalised to [0, 1] per example,
smoothed with a 3 x 3 mean filter, thresholded, and the bounding box of the largest connected region kept. A box
is judged by its IoU with the ground truth: GT-known localisation (IoU >= 0.5) and top-1 localisation (IoU >= 0.5
and the predicted class is right).

Tensor contract: attribution maps ``(N, C, H, W)`` (the input's shape) or ``(N, H, W)``; boxes are ``(N, 4)`` as
``(x0, y0, x1, y1)`` pixel coordinates with both corners inside the box (column ``x``, row ``y``; a box covers
``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels); logits ``(N, K)``, labels int64 ``(N,)``. Metrics return per-example
tensors ``(N,)``; aggregation is the caller's. Bad input raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from attrobust._checks import check_choice, check_data_device, check_maps
from attrobust.metrics.accuracy import accuracy


def _grayscale(maps: torch.Tensor) -> torch.Tensor:
    check_maps(maps, "maps", {4: "shape (N, C, H, W)", 3: "(N, H, W)"})
    g = maps.detach().abs()
    return g.sum(1) if g.dim() == 4 else g


def localization_heatmap(maps: torch.Tensor) -> torch.Tensor:
    """The heat map that :func:`boxes_from_maps` thresholds: grayscale, normalised, 3 x 3 mean filtered.

    Args:
        maps: attributions ``(N, C, H, W)`` (``|a|`` summed over channels) or ``(N, H, W)`` (``|a|``), finite.

    Returns:
        float64 tensor ``(N, H, W)`` in [0, 1]: each map min-max normalised (a constant map becomes zeros), then
        averaged over its 3 x 3 neighbourhood (at the border over the neighbours inside the image).
    """
    g = _grayscale(maps).double()
    flat = g.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1), flat.amax(1).view(-1, 1, 1)
    span = hi - lo
    normalised = torch.where(span > 0, (g - lo) / span.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    return F.avg_pool2d(normalised[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]


def boxes_from_maps(maps: torch.Tensor, *, threshold: float = 0.2, connectivity: int = 8) -> torch.Tensor:
    """Bounding box of the largest connected high-attribution region of each map.

    The :func:`localization_heatmap` is thresholded (``heat >= threshold``), the connected regions are labelled
    (``scipy.ndimage.label``, 8- or 4-connected) and the box of the region with the most pixels is returned (on a
    tie, the region met first in row-major order). A map with no pixel above the threshold gets the whole image.

    Args:
        maps: attributions ``(N, C, H, W)`` or maps ``(N, H, W)``, finite, any device.
        threshold: in (0, 1], the fraction of the normalised heat map (0.2: CAM's 20 % of the maximum).
        connectivity: 8 (diagonal neighbours connect) or 4.

    Returns:
        int64 tensor ``(N, 4)`` of ``(x0, y0, x1, y1)`` with inclusive corners, on the maps' device.
    """
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold <= 1:
        raise ValueError(f"threshold: expected a number in (0, 1], got {threshold!r}")
    check_choice(connectivity, "connectivity", (4, 8))
    heat = localization_heatmap(maps)
    n, h, w = heat.shape
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    masks = (heat >= threshold).cpu().numpy()
    boxes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        labels, count = ndimage.label(masks[i], structure=structure)
        if count == 0:
            boxes[i] = (0, 0, w - 1, h - 1)
            continue
        largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        rows, cols = ndimage.find_objects(labels)[largest - 1]
        boxes[i] = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
    return torch.from_numpy(boxes).to(heat.device)


def _check_boxes(boxes: torch.Tensor, name: str, n: int | None = None) -> torch.Tensor:
    if not isinstance(boxes, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
    check_data_device(boxes, name)
    if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0 or (n is not None and boxes.shape[0] != n):
        expected = f"({n}, 4)" if n is not None else "(N, 4) with N >= 1"
        raise ValueError(f"{name}: expected boxes of shape {expected}, got {tuple(boxes.shape)}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"{name}: expected real-valued boxes, got dtype {boxes.dtype}")
    if boxes.is_floating_point() and not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name}: expected finite coordinates")
    if bool((boxes[:, 2] < boxes[:, 0]).any() | (boxes[:, 3] < boxes[:, 1]).any()):
        raise ValueError(f"{name}: expected x1 >= x0 and y1 >= y0 in every box (x0, y0, x1, y1)")
    return boxes


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each pair of boxes ``a[i]``, ``b[i]`` (pixel boxes with inclusive corners).

    Args:
        a, b: boxes ``(N, 4)`` as ``(x0, y0, x1, y1)`` with ``x1 >= x0``, ``y1 >= y0``; integer or float, same
            device. A box covers ``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels.

    Returns:
        Tensor ``(N,)`` in [0, 1] (float64 for float64 boxes, else float32).
    """
    a = _check_boxes(a, "a")
    b = _check_boxes(b, "b", a.shape[0])
    if a.device != b.device:
        raise ValueError(f"a, b: expected boxes on the same device, got {a.device} and {b.device}")
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    a, b = a.double(), b.double()
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1]) + 1).clamp(min=0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return (inter / (area_a + area_b - inter)).to(dtype)


def _check_iou_threshold(iou_threshold: float) -> float:
    if not isinstance(iou_threshold, (int, float)) or isinstance(iou_threshold, bool) or not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold: expected a number in (0, 1], got {iou_threshold!r}")
    return float(iou_threshold)


def gt_known_loc(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, *, iou_threshold: float = 0.5) -> torch.Tensor:
    """GT-known localisation: 1.0 where the predicted box overlaps the ground truth with IoU >= ``iou_threshold``.

    Args:
        pred_boxes, gt_boxes: boxes ``(N, 4)`` as ``(x0, y0, x1, y1)``, inclusive corners (see :func:`box_iou`).
        iou_threshold: in (0, 1]; 0.5 in the ART / ADL protocol.

    Returns:
        float32 tensor ``(N,)`` of 0.0 / 1.0.
    """
    thr = _check_iou_threshold(iou_threshold)
    return (box_iou(pred_boxes, gt_boxes) >= thr).float()


def top1_loc(
    pred_boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    logits: torch.Tensor,
    y: torch.Tensor,
    *,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Top-1 localisation: 1.0 where the box has IoU >= ``iou_threshold`` and the top-1 class is right.

    Args:
        pred_boxes, gt_boxes: boxes ``(N, 4)`` as ``(x0, y0, x1, y1)``, inclusive corners.
        logits: model outputs ``(N, K)``; y: int64 labels ``(N,)``.
        iou_threshold: in (0, 1]; 0.5 in the ART / ADL protocol.

    Returns:
        float32 tensor ``(N,)`` of 0.0 / 1.0: ``gt_known_loc * accuracy``.
    """
    loc = gt_known_loc(pred_boxes, gt_boxes, iou_threshold=iou_threshold)
    acc = accuracy(logits, y)
    if acc.shape != loc.shape or acc.device != loc.device:
        raise ValueError(
            f"logits: expected {loc.shape[0]} rows on {loc.device} like the boxes, got {tuple(logits.shape)} on "
            f"{logits.device}"
        )
    return loc * acc


__all__ = ["box_iou", "boxes_from_maps", "gt_known_loc", "localization_heatmap", "top1_loc"]
