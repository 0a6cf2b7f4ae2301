"""Point-in-time copies of checkpoints, and whether a checkpoint is the one copied.

A checkpoint written in the background must not change while it is written, yet training
goes on and updates its tensors in place. :func:`snapshot` copies it with
``copy.deepcopy``: every container, and every tensor with its storage (storages shared
in the original are shared in the copy), so ``torch.save`` writes the copy to the same
bytes as the original. Tensors on storages the caller names as unchanged until the copy
is written (a fit's parameters and optimizer state, which only the next optimizer step
changes) are kept as they are instead: most of a checkpoint's bytes, so the copy costs
its buffers and containers only. :func:`identical` tells whether a checkpoint would be
written to the same bytes as a snapshot, so that a second save of one state (the best and
the last checkpoint of an epoch) can reuse the first file instead of writing it again.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar

import torch

__all__ = ["identical", "on_cpu", "snapshot", "storages"]

T = TypeVar("T")

_ATOMS = (int, bool, str, bytes, type(None))


def snapshot(checkpoint: T, unchanged: Collection[int] = ()) -> T:
    """A copy of ``checkpoint`` that shares no container with it, and no tensor storage
    but those whose ``data_ptr`` is in ``unchanged`` (their tensors are kept as they are)."""
    memo: dict[int, Any] = {
        id(tensor): tensor
        for tensor in _tensors(checkpoint)
        if tensor.untyped_storage().data_ptr() in unchanged
    }
    return copy.deepcopy(checkpoint, memo)


def storages(tensors: Iterable[torch.Tensor]) -> set[int]:
    """The ``data_ptr`` of the storages of the CPU ``tensors`` (empty storages left out)."""
    pointers = {t.untyped_storage().data_ptr() for t in tensors if t.device.type == "cpu"}
    return pointers - {0}


def _tensors(checkpoint: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``checkpoint`` (nested dicts, lists, tuples)."""
    if isinstance(checkpoint, torch.Tensor):
        yield checkpoint
    elif isinstance(checkpoint, dict):
        for value in checkpoint.values():
            yield from _tensors(value)
    elif isinstance(checkpoint, list | tuple):
        for value in checkpoint:
            yield from _tensors(value)


def on_cpu(checkpoint: Any) -> bool:
    """Whether every tensor in ``checkpoint`` (nested dicts, lists, tuples) is on the CPU."""
    return all(tensor.device.type == "cpu" for tensor in _tensors(checkpoint))


def identical(checkpoint: Any, kept: Any) -> bool:
    """Whether ``torch.save`` writes ``checkpoint`` and the snapshot ``kept`` to the same bytes.

    Tensors compare by their metadata and every byte of their storage (so ``-0.0`` and
    ``0.0``, or NaNs of other payloads, differ), floats by their bits, containers by
    type, order and items, and storage sharing must match. Any other object counts as
    the same only when it is the very object (``snapshot`` keeps immutable atoms, such
    as enum members, as they are): a ``False`` only costs a write.
    """
    return _Comparison().same(checkpoint, kept)


class _Comparison:
    def __init__(self) -> None:
        self.storages: dict[int, int] = {}  # checkpoint storage -> kept storage (_cdata)
        self.kept_storages: dict[int, int] = {}

    def same(self, a: Any, b: Any) -> bool:
        if type(a) is not type(b):
            return False
        if isinstance(a, torch.Tensor):
            return self._tensors(a, b)
        if isinstance(a, float):
            return struct.pack("<d", a) == struct.pack("<d", b)
        if isinstance(a, _ATOMS):
            return a == b
        if isinstance(a, dict):
            return (
                len(a) == len(b)
                and all(map(self.same, a, b))
                and all(self.same(a[key], b[key]) for key in a)
                and self._attributes(a, b)
            )
        if isinstance(a, list | tuple):
            return len(a) == len(b) and all(map(self.same, a, b)) and self._attributes(a, b)
        return a is b

    def _attributes(self, a: Any, b: Any) -> bool:
        """Instance attributes of container subclasses (pickled with them)."""
        return self.same(getattr(a, "__dict__", None), getattr(b, "__dict__", None))

    def _tensors(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        if a.layout != torch.strided or a.is_quantized or a.__dict__ or b.__dict__:
            return False
        if _metadata(a) != _metadata(b):
            return False
        storage, kept = a.untyped_storage(), b.untyped_storage()
        key, kept_key = storage._cdata, kept._cdata
        if key in self.storages or kept_key in self.kept_storages:
            # seen: the same pairing (storages shared alike), bytes compared already
            return self.storages.get(key) == kept_key and self.kept_storages.get(kept_key) == key
        self.storages[key], self.kept_storages[kept_key] = kept_key, key
        if storage.nbytes() != kept.nbytes():
            return False
        # one memory (a storage the snapshot kept as it was) holds the same bytes
        same_memory = storage.data_ptr() == kept.data_ptr() != 0
        return same_memory or torch.equal(_bytes(storage), _bytes(kept))


def _metadata(tensor: torch.Tensor) -> tuple:
    return (
        tensor.dtype,
        tensor.shape,
        tensor.stride(),
        tensor.storage_offset(),
        tensor.requires_grad,
        tensor.device,
    )


def _bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    """The whole storage as a tensor of its bytes (``torch.save`` writes whole storages),
    in the widest integer type that divides it: torch compares those 4-6x faster."""
    nbytes = storage.nbytes()
    widths = (torch.int64, torch.int32, torch.int16, torch.uint8)
    dtype = next(t for t in widths if not nbytes % t.itemsize)
    words = nbytes // dtype.itemsize
    return torch.empty(0, dtype=dtype, device=storage.device).set_(storage, 0, (words,), (1,))
