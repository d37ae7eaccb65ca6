"""The run directory protocol: values, atomic writes, logs, metrics, results, bundles."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vastkit.clock import ManualClock
from vastkit.errors import JobError
from vastkit.rundir import (
    JOB_SPEC_VERSION,
    AttemptResult,
    AttemptSettings,
    CheckpointSettings,
    Heartbeat,
    JobSpec,
    MetricRecord,
    OrchestratorBeat,
    Phase,
    ResultStatus,
    RunDir,
    make_bundle,
    unpack_bundle,
)


def full_spec() -> JobSpec:
    return JobSpec(
        run_id="r-42",
        command=("python", "train.py", "--lr", "0.1"),
        env={"A": "1", "B": "two words"},
        checkpoint=CheckpointSettings(
            every_steps=100, keep_last=2, keep_best=1, best_metric="loss"
        ),
        attempt=AttemptSettings(
            heartbeat_interval=5,
            grace_period=20,
            deadline=1_800_000_000.0,
            orchestrator_timeout=600,
            api_base_url="http://127.0.0.1:1",
        ),
        has_code_bundle=True,
        name="demo",
        created_at=1_767_225_600.0,
    )


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_job_round_trip(scheme: str, tmp_path: Path) -> None:
    url = (tmp_path / "run").as_uri() if scheme == "file" else f"memory://rt-{tmp_path.name}/run"
    rd = RunDir(url)
    assert rd.read_job() is None
    spec = full_spec()
    rd.write_job(spec)
    assert rd.read_job() == spec
    shell = JobSpec(run_id="r-43", command="echo hi && python x.py")
    rd.write_job(shell)
    assert rd.read_job() == shell


_TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00"))
"""Text a command or a variable can hold (a NUL byte cannot reach a process)."""


@settings(max_examples=30, deadline=None)
@given(
    command=st.one_of(
        _TEXT.filter(str.strip),
        st.tuples(_TEXT.filter(str.strip), st.lists(_TEXT)).map(lambda p: (p[0], *p[1])),
    ),
    env=st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), _TEXT),
    every=st.none() | st.integers(1, 10**6),
    deadline=st.none() | st.floats(0, 4e9),
)
def test_job_round_trip_property(
    command: Any, env: dict[str, str], every: int | None, deadline: float | None
) -> None:
    rd = RunDir("memory://prop/run")
    spec = JobSpec(
        run_id="p",
        command=command,
        env=env,
        checkpoint=CheckpointSettings(every_steps=every),
        attempt=AttemptSettings(deadline=deadline),
    )
    rd.write_job(spec)
    assert rd.read_job() == spec


def test_newer_job_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    raw = json.loads(
        json.dumps({"run_id": "x", "command": ["true"], "version": JOB_SPEC_VERSION + 1})
    )
    rd.write_bytes("job.json", json.dumps(raw).encode())
    newer = JOB_SPEC_VERSION + 1
    with pytest.raises(
        JobError, match=rf"job\.json has format version {newer}.*install a newer vastkit"
    ):
        rd.read_job()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "should hold a JSON object"),
        (b'{"run_id": "x", "command": 5}', r"\$\.command"),
        (b'{"command": ["true"]}', r"\$\.run_id"),
    ],
)
def test_garbled_objects_raise_job_error_naming_the_object(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    rd.write_bytes("job.json", content)
    with pytest.raises(JobError, match=expected) as info:
        rd.read_job()
    assert rd.url_of("job.json") in str(info.value)
    rd.write_bytes("attempts/1/heartbeat.json", content)
    with pytest.raises(JobError, match=r"heartbeat\.json"):
        rd.read_heartbeat(1)


def test_missing_and_empty_objects_read_as_none(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path / "run"))  # a plain path works too
    assert rd.read_heartbeat(3) is None
    assert rd.read_result() is None
    assert rd.read_cancel() is None
    assert rd.read_orchestrator() is None
    assert rd.read_bundle() is None
    assert rd.attempts() == []
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_bytes(b"")
    assert rd.read_result() is None


def test_atomic_write_leaves_no_temporary_files_and_replaces_whole(tmp_path: Path) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    for i in range(5):
        rd.write_heartbeat(Heartbeat(attempt=1, time=float(i), phase=Phase.RUNNING, step=i))
    files = sorted(p.name for p in (tmp_path / "run" / "attempts" / "1").iterdir())
    assert files == ["heartbeat.json"]
    beat = rd.read_heartbeat(1)
    assert beat is not None
    assert beat.step == 4


def test_readers_never_see_a_half_written_object(tmp_path: Path) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    big = [b"a" * 2_000_000, b"b" * 3_000_000]
    rd.write_bytes("blob", big[0])
    done = threading.Event()

    def writer() -> None:
        for i in range(40):
            rd.write_bytes("blob", big[i % 2])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    while not done.is_set():
        data = rd.read_bytes("blob")
        assert data in big
        seen += 1
    thread.join()
    assert seen > 0


def test_a_failed_write_keeps_the_old_object_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    rd = RunDir((tmp_path / "run").as_uri(), clock=clock)
    rd.write_bytes("x", b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("vastkit._store.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        rd.write_bytes("x", b"new")
    monkeypatch.undo()
    assert len(clock.slept) == 2  # three tries (the run directory's policy), in virtual time
    assert rd.read_bytes("x") == b"old"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["x"]


def test_log_chunks_are_read_in_order_and_stop_at_a_gap(tmp_path: Path) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    for i in range(12):  # more than 10, so lexical order of names matters
        rd.write_log_chunk(2, i, f"line {i}\n".encode())
    assert rd.read_log(2) == b"".join(f"line {i}\n".encode() for i in range(12))
    assert rd.tail_log(2, 2) == "line 10\nline 11"
    rd.write_log_chunk(2, 13, b"after a gap\n")  # 12 missing: not visible yet
    assert b"after a gap" not in rd.read_log(2)
    assert rd.attempts() == [2]


class WritingClock(ManualClock):
    """A virtual clock whose sleep lets a fake worker write its next output."""

    def __init__(self, rd: RunDir, attempt: int) -> None:
        super().__init__()
        self.rd, self.attempt, self.polls = rd, attempt, 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.polls += 1
        if self.polls <= 3:
            self.rd.write_log_chunk(self.attempt, self.polls, f"chunk {self.polls}\n".encode())
        elif self.polls == 5:
            self.rd.write_log_chunk(self.attempt, 4, b"last\n")
            self.rd.write_attempt_result(
                AttemptResult(
                    attempt=self.attempt,
                    status=ResultStatus.SUCCEEDED,
                    exit_code=0,
                    ended_at=self.now(),
                )
            )


def test_follow_yields_chunks_as_they_appear_and_ends_with_the_result(tmp_path: Path) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    clock = WritingClock(rd, 1)
    rd = RunDir(rd.url, clock=clock)
    clock.rd = rd
    rd.write_log_chunk(1, 0, b"chunk 0\n")
    got = list(rd.follow_log(1, poll_interval=2.0))
    assert got == [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n", b"chunk 3\n", b"last\n"]
    assert clock.slept == [2.0] * 5


def test_follow_gives_up_after_its_timeout(tmp_path: Path) -> None:
    clock = ManualClock()
    rd = RunDir((tmp_path / "run").as_uri(), clock=clock)
    assert list(rd.follow_log(1, poll_interval=1.0, timeout=10.0)) == []
    assert clock.slept == [1.0] * 10


def test_metrics_chunks_round_trip(tmp_path: Path) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    first = [MetricRecord(step=i, time=float(i), values={"loss": 1.0 / (i + 1)}) for i in range(3)]
    rd.write_metrics_chunk(1, 0, first[:2])
    rd.write_metrics_chunk(1, 1, first[2:])
    rd.write_metrics_chunk(2, 0, [MetricRecord(step=9, time=9.0, values={"acc": 0.9})])
    assert rd.read_metrics(1) == first
    assert [r.step for r in rd.read_metrics()] == [0, 1, 2, 9]
    rd.write_bytes("attempts/2/metrics/00000001.jsonl", b'{"step": "x"}\n')
    with pytest.raises(JobError, match=r"00000001\.jsonl"):
        rd.read_metrics(2)


@pytest.mark.parametrize(
    ("status", "ends_job"),
    [
        (ResultStatus.SUCCEEDED, True),
        (ResultStatus.FAILED, True),
        (ResultStatus.CANCELLED, True),
        (ResultStatus.TIMED_OUT, True),
        (ResultStatus.PREEMPTED, False),
        (ResultStatus.ABANDONED, False),
    ],
)
def test_only_terminal_results_end_the_job(
    tmp_path: Path, status: ResultStatus, ends_job: bool
) -> None:
    rd = RunDir((tmp_path / "run").as_uri())
    result = AttemptResult(
        attempt=3, status=status, exit_code=0, ended_at=5.0, metrics={"loss": 0.1}, step=7
    )
    rd.write_attempt_result(result)
    assert rd.read_attempt_result(3) == result
    assert result.terminal is ends_job
    assert rd.read_result() == (result if ends_job else None)


def test_orchestrator_beat_and_cancel(tmp_path: Path) -> None:
    clock = ManualClock()
    rd = RunDir((tmp_path / "run").as_uri(), clock=clock)
    rd.write_orchestrator(OrchestratorBeat(time=1.0, seq=4, pid=10, host="laptop"))
    assert rd.read_orchestrator() == OrchestratorBeat(time=1.0, seq=4, pid=10, host="laptop")
    request = rd.request_cancel("user pressed Ctrl-C")
    assert rd.read_cancel() == request
    assert request.time == clock.now()


def test_checkpoints_url_follows_the_spec(tmp_path: Path) -> None:
    rd = RunDir("memory://x/run/")
    assert rd.checkpoint_url() == "memory://x/run"
    spec = JobSpec(run_id="run", command="true", checkpoint=CheckpointSettings(url_suffix="ck/"))
    assert rd.checkpoint_url(spec) == "memory://x/run/ck"
    assert rd.run_id == "run"


def test_job_spec_rejects_empty_values() -> None:
    with pytest.raises(ValueError, match="run_id"):
        JobSpec(run_id="", command="true")
    with pytest.raises(ValueError, match="command"):
        JobSpec(run_id="x", command="  ")
    with pytest.raises(ValueError, match="command"):
        JobSpec(run_id="x", command=())


# -- bundles ------------------------------------------------------------------------------------


def make_tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "model.py").write_text("X = 1\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: x\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").write_text("")
    (root / "data.bin").write_bytes(b"x" * 10)
    (root / "link.py").symlink_to("/etc/passwd")


def test_bundle_round_trip_with_excludes(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    data = make_bundle(tmp_path / "src", exclude=[".git", "__pycache__", ".venv", "*.bin"])
    files = unpack_bundle(data, tmp_path / "out")
    assert sorted(files) == ["pkg/__init__.py", "pkg/model.py", "train.py"]
    assert (tmp_path / "out" / "pkg" / "model.py").read_text() == "X = 1\n"
    assert not (tmp_path / "out" / ".git").exists()
    assert not (tmp_path / "out" / "link.py").exists()


def test_bundle_size_cap_names_the_largest_files(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    (tmp_path / "src" / "weights.pt").write_bytes(b"w" * 5000)
    with pytest.raises(JobError, match=r"weights\.pt.*Exclude them"):
        make_bundle(tmp_path / "src", max_bytes=1000)
    with pytest.raises(JobError, match="not a directory"):
        make_bundle(tmp_path / "missing")


def tar_with(*members: tarfile.TarInfo, data: bytes = b"evil") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return buf.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escape.txt"),
        tarfile.TarInfo("a/../../escape.txt"),
        tarfile.TarInfo("/tmp/absolute.txt"),
        link("innocent", "/etc/passwd"),
        link("hard", "../../etc/passwd", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"],
)
def test_unpack_refuses_unsafe_members_before_writing_anything(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    data = tar_with(tarfile.TarInfo("fine.txt"), member)
    with pytest.raises(JobError, match="code bundle holds"):
        unpack_bundle(data, tmp_path / "out" / "deep")
    assert not (tmp_path / "out" / "deep" / "fine.txt").exists()
    assert not (tmp_path / "out" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_unpack_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"not a readable \.tar\.gz"):
        unpack_bundle(b"definitely not gzip", tmp_path / "out")


def test_bundle_through_the_run_directory(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    rd = RunDir("memory://bundle-test/run")
    rd.write_bundle(make_bundle(tmp_path / "src"))
    data = rd.read_bundle()
    assert data is not None
    assert "train.py" in unpack_bundle(data, tmp_path / "out")


@pytest.mark.s3
def test_run_directory_on_s3(s3_bucket: tuple[str, dict[str, Any]]) -> None:
    url, options = s3_bucket
    rd = RunDir(f"{url}/runs/r1", options)
    spec = full_spec()
    rd.write_job(spec)
    assert rd.read_job() == spec
    for i in range(3):
        rd.write_log_chunk(1, i, f"{i}\n".encode())
    rd.write_heartbeat(Heartbeat(attempt=1, time=2.0, phase=Phase.RUNNING, step=5))
    rd.write_attempt_result(
        AttemptResult(attempt=1, status=ResultStatus.PREEMPTED, exit_code=0, ended_at=3.0)
    )
    assert rd.read_log(1) == b"0\n1\n2\n"
    beat = rd.read_heartbeat(1)
    assert beat is not None
    assert beat.step == 5
    assert rd.attempts() == [1]
    assert rd.read_result() is None
    again = RunDir(f"{url}/runs/r1", options)  # a second reader, like the orchestrator
    attempt_result = again.read_attempt_result(1)
    assert attempt_result is not None
    assert attempt_result.status is ResultStatus.PREEMPTED
