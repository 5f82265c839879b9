"""An :class:`ImageDataset` that also carries one bounding box per image (weakly supervised localisation).

``BoxedImageDataset`` is an ``ImageDataset`` (same fields, indexing, ``batches``; ``ds[i]`` still returns
``(image, label)``) with an extra keyword-only field ``boxes``: float32 ``(N, 4)`` rows ``(x0, y0, x1, y1)`` in
the pixel coordinates of the stored images (continuous: pixel column ``j`` spans ``[j, j + 1)``, so a box
covering the whole image is ``(0, 0, W, H)``). ``subset`` keeps the boxes aligned with the images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attrobust.data.base import ImageDataset, Index


@dataclass
class BoxedImageDataset(ImageDataset):
    """Images, labels and one box per image.

    Attributes (beyond :class:`ImageDataset`'s):
        boxes: float32 tensor ``(N, 4)``, rows ``(x0, y0, x1, y1)`` with ``0 <= x0 <= x1 <= W`` and
            ``0 <= y0 <= y1 <= H`` (``W``, ``H`` the image width and height), keyword-only.
    """

    boxes: torch.Tensor = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        b = self.boxes
        n = len(self)
        if not isinstance(b, torch.Tensor):
            raise ValueError(f"boxes: expected a torch.Tensor of shape ({n}, 4), got {type(b).__name__}")
        if b.dtype != torch.float32:
            raise ValueError(f"boxes: expected dtype torch.float32, got {b.dtype}")
        if tuple(b.shape) != (n, 4):
            raise ValueError(f"boxes: expected shape ({n}, 4), got {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()):
            raise ValueError("boxes: expected finite values, got NaN/inf entries")
        _, h, w = self.shape
        x0, y0, x1, y1 = b.unbind(1)
        ok = (x0 >= 0) & (y0 >= 0) & (x0 <= x1) & (y0 <= y1) & (x1 <= w) & (y1 <= h)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            raise ValueError(
                f"boxes: expected rows (x0, y0, x1, y1) with 0 <= x0 <= x1 <= {w} and 0 <= y0 <= y1 <= {h}, "
                f"got {[round(float(v), 3) for v in b[i]]} at row {i}"
            )

    def subset(self, indices: Index) -> BoxedImageDataset:
        """A new dataset with the selected examples and their boxes (see :meth:`ImageDataset.subset`)."""
        idx = indices if isinstance(indices, slice) else self._as_index(indices)
        return BoxedImageDataset(self.images[idx], self.labels[idx], self.classes, self.name, boxes=self.boxes[idx])
