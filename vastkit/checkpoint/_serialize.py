"""How a checkpoint's state becomes bytes and back (torch is imported only when used).

* :class:`Stager` copies a state tree into CPU buffers reused across saves (pinned for CUDA
  sources, one batched ``_foreach_copy_``): the only stall an asynchronous save costs;
* :func:`load_file` loads a payload file memory-mapped;
* :func:`decode` undoes the staging encoding (NumPy arrays travel as tensors);
* :func:`capture_rng` and :func:`restore_rng` carry the Python, NumPy, torch and CUDA RNG states.
"""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vastkit.errors import CheckpointError, install_hint

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORMAT_TAG",
    "Stager",
    "capture_rng",
    "decode",
    "import_torch",
    "is_module",
    "load_file",
    "restore_rng",
]

FORMAT_TAG = "vastkit-checkpoint"
"""The tag a payload carries, so a foreign ``.pt`` file is never taken for a checkpoint."""

NDARRAY_TAG = "__vastkit_ndarray__"


def import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed in the dev environment
        raise CheckpointError(f"checkpoints need PyTorch: {install_hint('torch')}") from exc
    return torch


def load_file(torch: Any, path: str, map_location: Any, weights_only: bool) -> Any:
    """``torch.load`` a payload file memory-mapped (the tensors use the file's pages, so the
    bytes and the tensors are never both in memory); a file that cannot be mapped (an old
    serialisation format) is read normally."""
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    return torch.load(path, map_location=map_location, weights_only=weights_only)


class Stager:
    """Copies a state tree into CPU buffers that are reused across saves."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def stage(self, state: Any, *, copy_tensors: bool) -> tuple[Any, int]:
        th = import_torch()
        used: dict[tuple[Any, ...], torch.Tensor] = {}
        memo: dict[int, Any] = {}
        total = [0]
        any_cuda = [False]
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

        def buffer_for(path: tuple[Any, ...], src: torch.Tensor) -> torch.Tensor:
            buf = self.buffers.get(path)
            pin = src.is_cuda and th.cuda.is_available()
            if (
                buf is None
                or buf.shape != src.shape
                or buf.dtype != src.dtype
                or (pin and not buf.is_pinned())
            ):
                buf = th.empty(src.shape, dtype=src.dtype, device="cpu", pin_memory=pin)
            used[path] = buf
            return buf

        def tensor(path: tuple[Any, ...], t: torch.Tensor) -> torch.Tensor:
            if id(t) in memo:
                return memo[id(t)][1]  # type: ignore[no-any-return]
            total[0] += t.numel() * t.element_size()
            if not copy_tensors:
                out = t.detach()
            elif t.is_sparse or t.is_quantized or t.layout != th.strided:
                out = t.detach().to("cpu", copy=True)
            else:
                out = buffer_for(path, t)
                pairs.append((out, t.detach()))
                any_cuda[0] = any_cuda[0] or t.is_cuda
            memo[id(t)] = (t, out)  # holding t keeps its id from being reused
            return out

        def walk(path: tuple[Any, ...], obj: Any) -> Any:
            if isinstance(obj, th.Tensor):
                return tensor(path, obj)
            if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
                return obj
            if isinstance(obj, th.dtype | th.device | th.Size):
                return obj
            if type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray":
                return ndarray(path, obj)
            state_dict = getattr(obj, "state_dict", None)
            if callable(state_dict) and not isinstance(obj, Mapping | type):
                return walk(path, state_dict())
            if isinstance(obj, OrderedDict):
                return OrderedDict((k, walk((*path, k), v)) for k, v in obj.items())
            if isinstance(obj, Mapping):
                return {k: walk((*path, k), v) for k, v in obj.items()}
            if type(obj) is list:
                return [walk((*path, i), v) for i, v in enumerate(obj)]
            if type(obj) is tuple:
                return tuple(walk((*path, i), v) for i, v in enumerate(obj))
            return copy.deepcopy(obj) if copy_tensors else obj

        def ndarray(path: tuple[Any, ...], arr: Any) -> Any:
            import numpy as np

            try:
                src = th.from_numpy(np.ascontiguousarray(arr))
            except TypeError:  # a dtype torch cannot hold: keep the array (pickled)
                return arr.copy() if copy_tensors else arr
            return {NDARRAY_TAG: tensor((*path, NDARRAY_TAG), src)}

        tree = walk((), state)
        if pairs:
            copy_all(th, pairs, non_blocking=any_cuda[0])
        if any_cuda[0]:
            th.cuda.synchronize()
        if copy_tensors:
            self.buffers = used
        return tree, total[0]


def copy_all(
    th: Any, pairs: list[tuple[torch.Tensor, torch.Tensor]], *, non_blocking: bool
) -> None:
    """Copy every source into its buffer: one batched ``_foreach_copy_`` where torch has it."""
    dst = [d for d, _ in pairs]
    src = [s for _, s in pairs]
    with th.no_grad():
        foreach = getattr(th, "_foreach_copy_", None)
        if foreach is not None:
            try:
                foreach(dst, src, non_blocking=non_blocking)
                return
            except (RuntimeError, TypeError):  # pragma: no cover - older torch or odd dtypes
                pass
        for d, s in pairs:
            d.copy_(s, non_blocking=non_blocking)


def decode(obj: Any) -> Any:
    """Undo the staging encoding (numpy arrays travel as tensors)."""
    if isinstance(obj, dict):
        if len(obj) == 1 and NDARRAY_TAG in obj:
            return obj[NDARRAY_TAG].numpy()
        decoded = {k: decode(v) for k, v in obj.items()}
        return OrderedDict(decoded) if isinstance(obj, OrderedDict) else decoded
    if type(obj) is list:
        return [decode(v) for v in obj]
    if type(obj) is tuple:
        return tuple(decode(v) for v in obj)
    return obj


def capture_rng() -> dict[str, Any]:
    torch = import_torch()
    rng: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is installed in the dev environment
        pass
    else:
        st = np.random.get_state(legacy=False)
        rng["numpy"] = {
            "bit_generator": str(st["bit_generator"]),
            "key": torch.from_numpy(np.asarray(st["state"]["key"], dtype=np.int64)),
            "pos": int(st["state"]["pos"]),
            "has_gauss": int(st["has_gauss"]),
            "gauss": float(st["gauss"]),
        }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = list(torch.cuda.get_rng_state_all())
    return rng


def restore_rng(rng: Mapping[str, Any]) -> None:
    torch = import_torch()
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "numpy" in rng:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            pass
        else:
            st = rng["numpy"]
            np.random.set_state(
                {
                    "bit_generator": st["bit_generator"],
                    "state": {"key": st["key"].numpy().astype(np.uint32), "pos": st["pos"]},
                    "has_gauss": st["has_gauss"],
                    "gauss": st["gauss"],
                }
            )
    cuda = rng.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def is_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, torch.nn.Module)
