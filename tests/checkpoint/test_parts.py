"""Lent memory in streamed writes: a staged tensor's bytes are sent without a copy, whole and in
order, on S3 (a part retried after a lost answer too) and on a local disk."""

from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path
from typing import Any

import blake3
import pytest

from vastkit._parts import LENT_MIN, Lender, Part, address_of
from vastkit._store import Store
from vastkit.clock import ManualClock
from vastkit.retry import RetryPolicy


def test_address_of_reads_writable_and_read_only_buffers() -> None:
    data = bytearray(os.urandom(100))
    expected = ctypes.addressof(ctypes.c_char.from_buffer(data))
    assert address_of(memoryview(data)) == expected
    assert address_of(memoryview(data)[10:]) == expected + 10
    assert address_of(memoryview(data).toreadonly()) == expected


def test_a_lender_lends_only_views_wholly_inside_its_ranges() -> None:
    block = bytearray(4 * LENT_MIN)
    other = bytearray(4 * LENT_MIN)
    start = address_of(memoryview(block))
    lender = Lender([(start, len(block))])
    view = memoryview(block)
    assert lender.lends(view)
    assert lender.lends(view[LENT_MIN : 3 * LENT_MIN])
    assert not lender.lends(view[: LENT_MIN - 1])  # too small to be worth keeping
    assert not lender.lends(memoryview(other))
    assert not Lender([(start, len(block) - 1)]).lends(view)  # one byte past the range
    assert not Lender([]).lends(view)


def test_a_part_reads_back_what_it_holds_from_any_position() -> None:
    part = Part()
    part.copy(memoryview(b"head"))
    part.lend(memoryview(b"x" * 10))
    part.copy(memoryview(b"tail"))
    assert len(part) == 18
    assert part.copied == 8
    assert part.whole() == b"head" + b"x" * 10 + b"tail"
    assert part.read(6) == b"headxx"
    assert part.tell() == 6
    assert part.seek(0) == 0
    assert part.read() == part.whole()
    assert part.seek(-4, 2) == 14
    assert part.read() == b"tail"


def _writes(out: Any, chunks: list[memoryview]) -> None:
    for chunk in chunks:
        out.write(chunk)


@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_lent_views_are_sent_whole_in_order_and_not_copied(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "s3":
        url, options = request.getfixturevalue("s3_bucket")
    else:
        url, options = f"file://{tmp_path}", {}
    st = Store(url, options, clock=ManualClock(), transfer_chunk_bytes=5 * 2**20)
    tensor_like = bytearray(os.urandom(13 * 2**20 + 11))  # memory that outlives the write
    lender = Lender([(address_of(memoryview(tensor_like)), len(tensor_like))])
    copied: list[int] = []
    real_copy = Part.copy

    def counting(self: Part, view: memoryview) -> None:
        copied.append(view.nbytes)
        real_copy(self, view)

    monkeypatch.setattr(Part, "copy", counting)
    chunks = [memoryview(b"header" * 5), memoryview(tensor_like), memoryview(b"trailer")]
    path = st.path("lent.bin")
    with st.writer(path, size_hint=len(tensor_like), lender=lender) as out:
        _writes(out, chunks)
    expected = b"".join(bytes(c) for c in chunks)
    assert sum(copied) == len(expected) - len(tensor_like)  # only the small writes
    assert out.digest == blake3.blake3(expected).hexdigest()
    assert hashlib.sha256(st.read(path) or b"").digest() == hashlib.sha256(expected).digest()


@pytest.mark.s3
def test_a_lent_part_is_sent_again_whole_after_a_lost_answer(
    s3_bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, options = s3_bucket
    st = Store(
        url,
        options,
        clock=ManualClock(),
        retry=RetryPolicy(attempts=3, initial_delay=0.1, max_delay=0.1, deadline=10.0),
        transfer_chunk_bytes=5 * 2**20,
    )
    real = st.fs.call_s3
    failed: list[int] = []

    def flaky(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "upload_part" and kwargs["PartNumber"] == 2 and not failed:
            failed.append(kwargs["PartNumber"])
            real(method, *args, **kwargs)  # the part arrives; the answer is lost
            raise OSError("connection reset (injected)")
        return real(method, *args, **kwargs)

    monkeypatch.setattr(st.fs, "call_s3", flaky)
    data = bytearray(os.urandom(12 * 2**20 + 5))
    lender = Lender([(address_of(memoryview(data)), len(data))])
    path = st.path("retried.bin")
    with st.writer(path, size_hint=len(data), lender=lender) as out:
        out.write(memoryview(data))
    assert failed == [2]
    monkeypatch.undo()
    assert st.read(path) == bytes(data)
