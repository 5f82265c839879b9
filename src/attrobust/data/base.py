"""The in-memory image dataset every loader returns.

Tensor contract: ``images`` is float32 ``(N, C, H, W)`` with finite values in [0, 1] (pixel space; normalisation
is the model's first layer), ``labels`` is int64 ``(N,)`` with values in ``[0, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral

import torch

from attrobust._checks import check_images, check_labels

Index = int | slice | Sequence[int] | Sequence[bool] | torch.Tensor


@dataclass
class ImageDataset:
    """A labelled image set held in memory.

    Attributes:
        images: float32 tensor ``(N, C, H, W)``, finite, values in [0, 1], ``N >= 1``.
        labels: int64 tensor ``(N,)`` with values in ``[0, len(classes))``.
        classes: class names; ``classes[k]`` names label ``k`` (a list is converted to a tuple).
        name: short identifier of the source (``"mnist"``, ``"fashion_mnist:test"``, ...).

    Invalid fields raise ``ValueError`` stating what was expected and what was given.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str = "dataset"

    def __post_init__(self) -> None:
        check_images(self.images, "images")
        if self.images.dtype != torch.float32:
            raise ValueError(f"images: expected dtype torch.float32, got {self.images.dtype}")
        if isinstance(self.classes, str) or not isinstance(self.classes, Sequence):
            raise ValueError(f"classes: expected a sequence of class names, got {type(self.classes).__name__}")
        self.classes = tuple(self.classes)
        if not self.classes:
            raise ValueError("classes: expected at least one class name, got an empty sequence")
        bad = [c for c in self.classes if not isinstance(c, str)]
        if bad:
            raise ValueError(f"classes: expected str names, got {type(bad[0]).__name__} ({bad[0]!r})")
        if not isinstance(self.name, str):
            raise ValueError(f"name: expected a str, got {type(self.name).__name__}")
        check_labels(self.labels, self.images.shape[0], len(self.classes), "labels")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: Index) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image, label)``: ``(C, H, W)`` and a 0-d int64 tensor for an int index,
        ``(M, C, H, W)`` and ``(M,)`` for a slice, index sequence or mask."""
        if isinstance(index, torch.Tensor) and index.dim() == 0 and not index.is_floating_point():
            index = int(index)
        idx = index if isinstance(index, Integral | slice) else self._as_index(index)
        return self.images[idx], self.labels[idx]

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel pixel ``(mean, std)`` over the whole set (population std), e.g. for a ``Normalize`` layer.

        A channel with zero spread gets std 1.0 so that dividing by it is safe.
        """
        flat = self.images.transpose(0, 1).reshape(self.images.shape[1], -1).double()
        mean = flat.mean(1)
        std = flat.std(1, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def subset(self, indices: Index) -> ImageDataset:
        """A new dataset with the selected examples (a slice, int indices, a bool mask of length N, or a tensor).

        The result must be non-empty; indices out of range raise ``IndexError``.
        """
        idx = indices if isinstance(indices, slice) else self._as_index(indices)
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches: ``x`` float32 ``(B, C, H, W)`` in [0, 1], ``y`` int64 ``(B,)``.

        Every example appears exactly once; the last batch may be smaller. With ``shuffle=True`` the order is a
        permutation drawn from a ``torch.Generator`` seeded with ``seed``, so it is the same on every call.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            for start in range(0, n, batch_size):
                sel = order[start : start + batch_size]
                yield self.images[sel], self.labels[sel]
        else:
            for start in range(0, n, batch_size):
                yield self.images[start : start + batch_size], self.labels[start : start + batch_size]

    def _as_index(self, index: Index) -> torch.Tensor:
        """Convert an index sequence / mask / tensor to a 1-D tensor usable for indexing."""
        idx = torch.as_tensor(index)
        if idx.dim() != 1:
            raise ValueError(f"indices: expected a 1-D sequence of indices or a mask, got shape {tuple(idx.shape)}")
        if idx.dtype == torch.bool:
            if idx.shape[0] != len(self):
                raise ValueError(f"indices: expected a bool mask of length {len(self)}, got length {idx.shape[0]}")
            return idx
        if idx.numel() == 0:
            return idx.long()
        if idx.is_floating_point() or idx.is_complex():
            raise ValueError(f"indices: expected integer indices, got dtype {idx.dtype}")
        return idx.long()
