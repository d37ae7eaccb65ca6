"""Every code block of README.md and docs/ runs as pasted, against the emulator.

Sybil parses each page; each block is one test, run in page order with one namespace per page
(a later block sees what an earlier one defined, as a reader's session would).

- ```python blocks run in-process. Before a page's first block, :class:`DocWorld` serves an
  emulator on loopback with :class:`~vastkit.emulator.ProcessRunner` containers, points
  ``VAST_URL``/``VAST_API_KEY`` at it, and gives the page a temporary ``HOME``, working
  directory (with the ``train.py`` the examples launch) and ledger, and a bucket
  ``my-bucket`` on moto's S3 server (``AWS_ENDPOINT_URL``).
- ```bash / ```sh / ```console blocks: each command (``$ `` lines only in console blocks) runs
  in a subprocess with that environment; ``vastkit emulator serve`` runs in the background and
  a ``<the key it printed>`` placeholder gets what it printed. Install lines (``python3 -m
  venv``, ``pip install``) are not run: they are checked for truth (:func:`check_install`).
- ```text, ```yaml, ```json and ```toml blocks are output or files and are not run.
- ``<!-- invisible-code: python -->`` blocks give a fragment the context the page's prose
  describes (a ``client``, a ``model``); ``<!-- skip: next "reason" -->`` skips the next
  block with that reason (e.g. it needs a real Vast.ai account).

:data:`KNOWN_FAILURES` lists blocks of pages being rewritten that fail today, each with why;
they run as strict xfails, so one that starts passing fails until it leaves the list.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sybil import Document, Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from tests._support.processes import REPO_ROOT, Lines, ProcessGroups

DOCS: list[Path] = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
"""Every page whose blocks are tested."""

KNOWN_FAILURES: dict[str, str] = {
    "docs/cli.md:7": "fails as pasted (see the doc-test report)",
    "docs/cli.md:112": "fails as pasted (see the doc-test report)",
    "docs/cli.md:126": "fails as pasted (see the doc-test report)",
    "docs/cli.md:283": "fails as pasted (see the doc-test report)",
    "docs/cli.md:308": "fails as pasted (see the doc-test report)",
    "docs/cli.md:420": "fails as pasted (see the doc-test report)",
    "docs/concepts/configuration.md:43": "fails as pasted (see the doc-test report)",
    "docs/guide/budgets.md:27": "fails as pasted (see the doc-test report)",
    "docs/guide/budgets.md:59": "fails as pasted (see the doc-test report)",
    "docs/guide/checkpoints.md:22": "fails as pasted (see the doc-test report)",
    "docs/guide/checkpoints.md:141": "fails as pasted (see the doc-test report)",
    "docs/guide/client.md:65": "fails as pasted (see the doc-test report)",
    "docs/guide/client.md:81": "fails as pasted (see the doc-test report)",
    "docs/guide/client.md:108": "fails as pasted (see the doc-test report)",
    "docs/guide/cost-report.md:41": "fails as pasted (see the doc-test report)",
    "docs/guide/instances.md:90": "fails as pasted (see the doc-test report)",
    "docs/guide/profiles.md:23": "fails as pasted (see the doc-test report)",
    "docs/guide/profiles.md:165": "fails as pasted (see the doc-test report)",
    "docs/guide/queue.md:8": "fails as pasted (see the doc-test report)",
    "docs/guide/worker.md:9": "fails as pasted (see the doc-test report)",
    "docs/guide/worker.md:188": "fails as pasted (see the doc-test report)",
}
"""``"<page>:<line>"`` of a block that fails today -> why. The lead empties it."""

_JOB = "runs a whole job on s3://my-bucket with the default timeouts (minutes; not run yet)"
WHOLE_JOBS: dict[str, str] = {
    "README.md:46": _JOB,
    "docs/index.md:19": _JOB,
    "docs/getting-started.md:86": _JOB,
    "docs/guide/run-job.md:6": _JOB,
    "docs/guide/run-job.md:79": "reads the `result` of the job above",
    "docs/guide/fault-tolerant-training.md:49": _JOB,
    "docs/guide/artifacts.md:7": _JOB,
}
"""``"<page>:<line>"`` of a block that runs a whole job with the default timeouts on
``s3://my-bucket`` -> why it is not run yet (over a minute each; the worker gets no S3
endpoint). Skipped with that reason; the lead empties it."""

SHELL_LANGUAGES = ("bash", "sh", "console")
CI_SCRIPT = REPO_ROOT / ".ci" / "run"
BUCKETS = ("my-bucket", "bucket", "ml-artifacts")
"""The buckets the pages name, on moto's server."""
TRAIN_PY = textwrap.dedent(
    """\
    # The train.py the docs launch: a few steps through the worker context, one checkpoint.
    from vastkit import worker

    ctx = worker.context()
    info = ctx.checkpoints.restore()
    start = info.step + 1 if info else 0
    for step in range(start, 3):
        worker.log_metrics(step, loss=1.0 / (step + 1))
    ctx.checkpoints.save_now(2, {"step": 2})
    """
)


# ---------------------------------------------------------------------------- shell blocks


def shell_commands(example: Example) -> list[str]:
    """The commands of a shell block: every line of a bash/sh block (comments and blank lines
    dropped, ``\\`` continuations joined), only the ``$ `` lines of a console block."""
    language = example.region.lexemes["arguments"].split()[0]
    text = example.region.lexemes["source"].text.replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if language == "console":
            if not line.startswith("$ "):
                continue  # the output shown
            line = line[2:]
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def ci_lines() -> list[str]:
    """The install and test commands .ci/run executes (``python -m pytest`` with the venv's
    python: .ci/run puts .venv/bin first on PATH)."""
    out = []
    for line in CI_SCRIPT.read_text().splitlines():
        line = line.strip()
        if line.startswith(("python3 -m venv", ".venv/bin/pip install")):
            out.append(line)
        elif line == "python -m pytest":
            out.append(".venv/bin/python -m pytest")
    return out


def extras() -> set[str]:
    """The extras pyproject.toml defines."""
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return set(data["project"]["optional-dependencies"])


def check_install(command: str, page: str) -> None:
    """Check an install command for truth instead of running it.

    ``python3 -m venv`` and ``pip install`` of pinned packages, of ``-e ".[extras]"`` (a
    clone) or of a wheel in ``dist/`` are true when each extra exists; the README's commands
    are exactly the ones .ci/run executes; ``vastkit[...]`` from an index is not true yet.
    """
    words = shlex.split(command)
    if page == "README.md" and not re.search(r"\[demo\]", command):
        ci = [shlex.split(c) for c in ci_lines()]
        plain = [w for w in words if w != "-q"]
        assert any(plain == [w for w in c if w != "-q"] for c in ci), (
            f"{command!r} is not a command .ci/run executes: {ci_lines()}"
        )
    if "pytest" in words:
        return
    if words[:3] == ["python3", "-m", "venv"] or (
        words[:2] == ["python", "-m"] and "venv" in words
    ):
        return
    assert "install" in words, f"not an install command: {command!r}"
    for word in words[words.index("install") + 1 :]:
        if word.startswith("-"):
            continue
        match = re.fullmatch(r"(?P<name>[\w./*-]+?)\[(?P<extras>[\w,]+)\]", word)
        if match is None:
            assert "==" in word or word.startswith(("dist/", "./dist/")) or word == ".", (
                f"{word!r}: install a pinned package, a clone or a wheel in dist/"
            )
            continue
        name = match["name"]
        assert name != "vastkit", (
            f"{word!r} installs vastkit from a package index, where it is not published yet: "
            'install from a clone (pip install -e ".[...]") or a built wheel'
        )
        unknown = set(match["extras"].split(",")) - extras()
        assert not unknown, f"{word!r}: no extra {sorted(unknown)} in pyproject.toml"


def evaluate_shell(example: Example) -> None:
    """Run a shell block's commands in the page's world (install lines are checked)."""
    world: DocWorld = example.namespace["__docworld__"]
    page = world.page
    for chain in shell_commands(example):
        for command in chain.split(" && "):
            command = command.strip()
            words = command.split()
            if "pip" in command.split("/")[-1:][0].split() or re.search(
                r"(^|/)pip\s+(install|wheel)\b|-m venv\b", command
            ):
                if re.search(r"(^|/)pip\s+wheel\b", command):
                    continue  # builds a wheel: nothing to install yet
                check_install(command, page)
                continue
            if words[:1] == ["export"]:
                world.export(re.sub(r"=<[^>]*>", "=<>", command).split()[1:])
                continue
            if re.search(r"python -m pytest\b", command):
                check_install(command, page)  # the suite itself: the command CI runs
                continue
            if words[:3] == ["vastkit", "emulator", "serve"] or words[:3] == [
                "python",
                "-m",
                "vastkit.emulator",
            ]:
                world.serve_cli_emulator(words)
                continue
            if re.fullmatch(r"(vastkit demo|python -m vastkit\.demo)", command):
                # The demo itself runs in tests/jobs/test_demo.py (36 s): here, that it exists.
                world.run_command(command + " --help")
                continue
            if found := re.fullmatch(r"python (examples/\S+\.py)", command):
                # .ci/run runs every example; a page that names one names a real file.
                assert (REPO_ROOT / found[1]).is_file(), f"{found[1]} does not exist"
                continue
            world.run_command(re.sub(r"^\.venv/bin/", "", command))


# ---------------------------------------------------------------------------- the world


class DocWorld:
    """What a page's blocks run against: an emulator, a store, a home, a working directory."""

    def __init__(self, page: str, root: Path, s3_endpoint: str) -> None:
        from vastkit.emulator import Emulator, ProcessRunner, Timings

        self.page = page
        self.root = root
        self.procs = ProcessGroups()
        self.mp = pytest.MonkeyPatch()
        self.cwd = root / "work"
        home = root / "home"
        for folder in (self.cwd, home, self.cwd / "src", self.cwd / "local" / "vocab"):
            folder.mkdir(parents=True, exist_ok=True)
        for where in (self.cwd, self.cwd / "src"):
            (where / "train.py").write_text(TRAIN_PY)
        for vocab in (self.cwd / "local" / "vocab", self.cwd / "vocab"):
            vocab.mkdir(parents=True, exist_ok=True)
            (vocab / "vocab.txt").write_text("a\nb\n")
        self.emu = Emulator(
            0,
            offers=400,
            runner=ProcessRunner(root / "containers", grace_s=5.0),
            timings=Timings(provision_s=0.5, loading_s=0.5),
            rate_limits=False,
        )
        self.emu.serve()
        self.env: dict[str, str] = {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "VAST_URL": self.emu.url,
            "VAST_API_KEY": self.emu.api_key,
            "VASTKIT_LEDGER": str(root / "ledger.db"),
            "AWS_ENDPOINT_URL": s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "COLUMNS": "120",
        }
        for drop in ("VASTKIT_CONFIG", "VASTKIT_ENV", "VASTKIT_STORE_URL", "VASTKIT_PROFILES"):
            self.mp.delenv(drop, raising=False)
        for key, value in self.env.items():
            self.mp.setenv(key, value)
        self.mp.chdir(self.cwd)

    def export(self, assignments: list[str]) -> None:
        """``export A=B C=D``: placeholders ``<...>`` get what a served emulator printed."""
        for item in assignments:
            key, _, value = item.partition("=")
            if value == "<>":
                value = self.printed[key]
            self.env[key] = value
            self.mp.setenv(key, value)

    def serve_cli_emulator(self, words: list[str]) -> None:
        """Start ``vastkit emulator serve`` in the background; keep the URL and key it prints."""
        args = [str(Path(sys.executable).parent / "vastkit"), *words[1:]]
        if words[0] == "python":
            args = [sys.executable, *words[1:]]
        proc = self.procs.popen(
            args,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        self.printed: dict[str, str] = {}
        while "VAST_API_KEY" not in self.printed:
            line = lines.next()
            assert line is not None, f"{' '.join(words)} ended: {lines.seen}"
            if found := re.search(r"https?://127\.0\.0\.1:\d+", line):
                self.printed["VAST_URL"] = found[0]
            if found := re.search(r"API key:\s*(\S+)", line):
                self.printed["VAST_API_KEY"] = found[1]

    def run_command(self, command: str) -> None:
        """Run one command line with bash, the page's environment and the venv on PATH."""
        env = dict(self.env)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        done = self.procs.run(
            ["bash", "-euo", "pipefail", "-c", command], cwd=self.cwd, env=env, text=True
        )
        assert done.returncode == 0, (
            f"$ {command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )

    def close(self) -> None:
        try:
            self.procs.close()
            self.emu.close()
        finally:
            self.mp.undo()


# ---------------------------------------------------------------------------- collection


SYBIL = Sybil(
    parsers=[
        PythonCodeBlockParser(),
        *(CodeBlockParser(language, evaluate_shell) for language in SHELL_LANGUAGES),
        SkipParser(),
    ],
    path="../..",
)


def _parse(path: Path) -> tuple[Document, list[Example]]:
    document = SYBIL.parse(path)
    return document, list(document.examples())


PARSED = {path: _parse(path) for path in DOCS}


def _block_id(path: Path, example: Example) -> str:
    return f"{path.relative_to(REPO_ROOT)}:{example.line}"


def _params() -> Iterator[Any]:
    for path, (_, examples) in PARSED.items():
        for index, example in enumerate(examples):
            block = _block_id(path, example)
            marks = []
            if block in WHOLE_JOBS:
                marks.append(pytest.mark.skip(reason=WHOLE_JOBS[block]))
            if block in KNOWN_FAILURES:
                marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[block], strict=True))
            yield pytest.param(path, index, id=block, marks=marks)


class _Worlds:
    """One :class:`DocWorld` at a time: a page's world opens at its first block and closes
    when the next page starts (or the module ends)."""

    def __init__(self, tmp: pytest.TempPathFactory, s3_endpoint: str) -> None:
        self.tmp = tmp
        self.s3_endpoint = s3_endpoint
        self.current: tuple[Path, DocWorld] | None = None

    def for_page(self, path: Path) -> DocWorld:
        if self.current is not None and self.current[0] == path:
            return self.current[1]
        self.close()
        page = str(path.relative_to(REPO_ROOT))
        world = DocWorld(page, self.tmp.mktemp("doc"), self.s3_endpoint)
        self.current = (path, world)
        return world

    def close(self) -> None:
        if self.current is not None:
            self.current[1].close()
            self.current = None


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[_Worlds]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    for bucket in BUCKETS:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
    client.close()
    keeper = _Worlds(tmp_path_factory, s3_server)
    try:
        yield keeper
    finally:
        keeper.close()


@pytest.mark.parametrize(("path", "index"), list(_params()))
def test_block(worlds: _Worlds, path: Path, index: int) -> None:
    """The block runs as pasted (python in-process, shell commands in subprocesses)."""
    document, examples = PARSED[path]
    world = worlds.for_page(path)
    document.namespace["__docworld__"] = world
    examples[index].evaluate()
