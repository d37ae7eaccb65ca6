"""The parts of a streamed write: bytes copied from small writes, and views of memory lent by the
caller for as long as the write lasts (a checkpoint's staged tensors), sent without a copy.

``torch.save`` hands each tensor's storage to ``write`` as a memoryview of the storage itself;
headers and the pickle come from buffers it reuses. A :class:`Lender` knows which memory outlives
the write (the payload's tensor storages), so only those views are kept; everything else is
copied. A part made mostly of lent views costs next to no memory, so more parts can be in flight.
"""

from __future__ import annotations

import bisect
import ctypes
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LENT_MIN", "Lender", "Part", "address_of", "register_payload"]

LENT_MIN = 64 * 1024
"""Writes smaller than this are copied even from lent memory (a view costs more to keep)."""

_SEND_SLICE = 1 << 20


class _PyBuffer(ctypes.Structure):
    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)
_release_buffer.restype = None


def address_of(view: memoryview) -> int:
    """The address of a contiguous buffer's first byte (read-only buffers too)."""
    buf = _PyBuffer()
    if _get_buffer(view, ctypes.byref(buf), 0) != 0:  # pragma: no cover - raises instead
        raise BufferError("cannot read the buffer's address")
    try:
        return int(buf.buf or 0)
    finally:
        _release_buffer(ctypes.byref(buf))


class Lender:
    """Memory ranges that stay valid and unchanged until a write ends: ``lends(view)`` says
    whether a view lies wholly inside one of them."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for start, size in sorted((s, n) for s, n in ranges if n > 0):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], start + size))
            else:
                merged.append((start, start + size))
        self._starts = [s for s, _ in merged]
        self._ends = [e for _, e in merged]

    def lends(self, view: memoryview) -> bool:
        if view.nbytes < LENT_MIN or not self._starts or not view.c_contiguous:
            return False
        start = address_of(view)
        at = bisect.bisect_right(self._starts, start) - 1
        return at >= 0 and start + view.nbytes <= self._ends[at]


class Part:
    """One part: copied bytes and lent views, in order. Sized, re-readable from the start (a
    retry sends it again) and never closed by the HTTP stack."""

    __slots__ = ("_pos", "_tail", "copied", "segments", "size")

    def __init__(self) -> None:
        self.segments: list[bytearray | memoryview] = []
        self.size = 0
        self.copied = 0
        self._tail: bytearray | None = None
        self._pos = 0

    def copy(self, view: memoryview) -> None:
        if self._tail is None:
            self._tail = bytearray()
            self.segments.append(self._tail)
        self._tail += view
        self.size += view.nbytes
        self.copied += view.nbytes

    def lend(self, view: memoryview) -> None:
        self.segments.append(view)
        self._tail = None
        self.size += view.nbytes

    def views(self) -> Iterator[memoryview]:
        for segment in self.segments:
            yield memoryview(segment)

    def whole(self) -> bytes:
        return b"".join(self.segments)

    def __len__(self) -> int:
        return self.size

    def read(self, size: int = -1) -> bytes:
        """Read from the position (botocore takes a body with ``read`` for a file; the HTTP
        stack sends the views instead)."""
        whole = self.whole()
        end = len(whole) if size is None or size < 0 else min(len(whole), self._pos + size)
        out = whole[self._pos : end]
        self._pos = end
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        """botocore rewinds a body before a retry (the HTTP stack always sends it whole)."""
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, min(self.size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos


_registered = False


def register_payload() -> None:
    """Teach aiohttp (the HTTP stack under s3fs) to send a :class:`Part` as it is."""
    global _registered
    if _registered:
        return
    import aiohttp.payload

    class PartPayload(aiohttp.payload.Payload):
        _value: Part

        def __init__(self, value: Part, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("content_type", "application/octet-stream")
            super().__init__(value, *args, **kwargs)
            self._length = value.size

        @property
        def size(self) -> int:
            return self._length

        def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
            return self._value.whole().decode(encoding, errors)

        async def write(self, writer: Any) -> None:
            for view in self._value.views():
                for at in range(0, view.nbytes, _SEND_SLICE):
                    await writer.write(view[at : at + _SEND_SLICE])

        async def write_with_length(self, writer: Any, content_length: int | None) -> None:
            left = self._length if content_length is None else min(content_length, self._length)
            for view in self._value.views():
                for at in range(0, view.nbytes, _SEND_SLICE):
                    if left <= 0:
                        return
                    piece = view[at : at + min(_SEND_SLICE, left)]
                    await writer.write(piece)
                    left -= piece.nbytes

    aiohttp.payload.PAYLOAD_REGISTRY.register(PartPayload, Part)
    _registered = True
