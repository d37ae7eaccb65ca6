"""Every code block of README.md and docs/ runs as pasted, against the emulator.

Sybil parses each page; each page is one test that runs its blocks in page order with one
namespace (a later block sees what an earlier one defined, as a reader's session would), so
pytest-xdist never runs a page's blocks apart. A failing block does not stop its page: the test
reports every failing block under its ``<page>:<line>``.

- ```python blocks run in-process. Before a page's first block, :class:`DocWorld` serves an
  emulator on loopback with :class:`~vastkit.emulator.ProcessRunner` containers, points
  ``VAST_URL``/``VAST_API_KEY`` at it, and gives the page a temporary ``HOME``, working
  directory (with the ``train.py`` the examples launch) and ledger, and the buckets the pages
  name on moto's S3 server (``AWS_ENDPOINT_URL`` and test credentials, which also reach every
  container as account-level variables: that is how a worker of a whole job finds the store).
- ```bash / ```sh / ```console blocks: each command (``$ `` lines only in console blocks) runs
  with ``bash -euo pipefail`` in a subprocess with that environment, and must succeed, except a
  line that shows its exit code (``cmd; echo $?``): it runs without ``-e``, and in a console
  block the code it prints must be the one the page shows. ``vastkit emulator serve`` runs in
  the background and a ``<the key it printed>`` placeholder gets what it printed (without one,
  the page's own emulator stands for it). Install lines (``python3 -m venv``, ``pip install``)
  are not run: they are checked for truth (:func:`check_install`).
- ```yaml blocks right after ``<!-- save-as: PATH -->`` are written to PATH (the file the
  next blocks load); other ```text, ```yaml, ```json and ```toml blocks are output or files and
  are not run.
- ``<!-- invisible-code-block: python -->`` blocks give a fragment the context the page's prose
  describes (a ``client``, a ``model``) and close what they opened; ``<!-- skip: next "reason"
  -->`` skips the next block with that reason (e.g. it needs a real Vast.ai account).

:data:`KNOWN_FAILURES` lists blocks of pages being rewritten that fail today, each with its
error; they run and must fail (strictly: one that starts passing fails its page until it leaves
the list).
:data:`WHOLE_JOBS` lists whole-job blocks that are skipped, each with why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import tomllib
import traceback
from collections.abc import Iterator
from pathlib import Path
from unittest import SkipTest

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from tests._support.processes import REPO_ROOT, Lines, ProcessGroups

DOCS: list[Path] = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
"""Every page whose blocks are tested."""

KNOWN_FAILURES: dict[str, str] = {}
"""``"<page>:<line>"`` of a block that fails today -> why. The lead empties it."""

_JOB = "the same whole job as README.md:60, which runs (each whole job adds about 10 s)"
WHOLE_JOBS: dict[str, str] = {
    "docs/index.md:19": _JOB,
    "docs/getting-started.md:90": (
        _JOB + "; here it would run on the `vastkit emulator serve` the page started, whose "
        "containers are not given moto's endpoint"
    ),
    "docs/guide/fault-tolerant-training.md:49": (
        "the demo's job (outbid, recovered, resumed): `vastkit demo` runs it in "
        "tests/jobs/test_demo.py (about 36 s)"
    ),
    "docs/guide/artifacts.md:7": (
        "a whole job whose input s3://my-bucket/datasets/imagenet-mini is a real dataset, and "
        "plot_metrics needs matplotlib (the plot extra)"
    ),
    "docs/guide/queue.md:8": "runs three whole jobs, one after another",
}
"""``"<page>:<line>"`` of a block that runs a whole job -> why it is skipped. Whole jobs run
as pasted on ``s3://my-bucket`` (moto; the worker gets its endpoint as an account-level
variable of the emulator's containers): README.md:60, cli.md's ``vastkit launch`` and
run-job.md:6 run; the others repeat them or are run elsewhere. A stale entry (its block moved)
fails :func:`test_listed_blocks_exist`."""

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


def shown_exit_codes(example: Example) -> dict[str, int]:
    """``$ cmd; echo $?`` lines of a console block -> the exit code the page shows (the last
    output line after it, when that is a number)."""
    if example.region.lexemes["arguments"].split()[0] != "console":
        return {}
    shown: dict[str, int] = {}
    command: str | None = None
    last = ""
    for raw in [*example.region.lexemes["source"].text.splitlines(), "$ "]:
        line = raw.strip()
        if line.startswith("$ ") or line == "$":
            if command is not None and last.isdigit():
                shown[command] = int(last)
            command = line[2:].strip() if re.search(r";\s*echo \$\?$", line) else None
            last = ""
        elif line:
            last = line
    return shown


def ci_lines() -> list[str]:
    """The install and test commands .ci/run executes (``python -m pytest`` with the venv's
    python: .ci/run puts .venv/bin first on PATH)."""
    out = []
    for line in CI_SCRIPT.read_text().splitlines():
        line = line.strip()
        if line.startswith(("python3 -m venv", ".venv/bin/pip install")):
            out.append(line)
        elif line.startswith("python -m pytest"):
            out.append(f".venv/bin/{line}")
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


ASSIGNMENT = re.compile(r"""(?P<name>[A-Za-z_]\w*)=(\$\(.*\)|"[^"]*"|'[^']*'|[^\s"'$]\S*)""")
"""A line that only sets a shell variable (not ``NAME=value cmd``)."""


def evaluate_shell(example: Example) -> None:
    """Run a shell block's commands in the page's world (install lines are checked)."""
    world: DocWorld = example.namespace["__docworld__"]
    page = world.page
    shown = shown_exit_codes(example)
    for chain in shell_commands(example):
        if chain in shown:
            printed = world.run_command(chain).strip().splitlines() or [""]
            assert printed[-1] == str(shown[chain]), (
                f"$ {chain}\nthe page shows exit code {shown[chain]}; it printed {printed}"
            )
            continue
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
            if found := ASSIGNMENT.fullmatch(command):
                # A shell variable for the block's next lines (``VERSION=$(...)``).
                value = world.run_command(f'{command}; printf %s "${found["name"]}"')
                world.export([f"{found['name']}={value}"])
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
            command = re.sub(r"^\.venv/bin/", "", command)  # the venv is on PATH
            if re.fullmatch(r"(vastkit demo|python -m vastkit\.demo)", command):
                # The demo itself runs in tests/jobs/test_demo.py (36 s): here, that it exists.
                world.run_command(command + " --help")
                continue
            if found := re.fullmatch(r"python (examples/\S+\.py)", command):
                # .ci/run runs every example; a page that names one names a real file.
                assert (REPO_ROOT / found[1]).is_file(), f"{found[1]} does not exist"
                continue
            world.run_command(command)


# ---------------------------------------------------------------------------- saved files


SAVE_AS = re.compile(r"<!--\s*save-as:\s*(?P<path>\S+)\s*-->\s*$")
"""The comment that makes the next ```yaml block a file the page's later blocks read."""


class SavedFileParser(CodeBlockParser):
    """```yaml blocks right after ``<!-- save-as: PATH -->``: each is written, as shown, to
    PATH under the page's working directory (the file the next blocks load). Other yaml
    blocks are not collected."""

    def __init__(self) -> None:
        super().__init__("yaml", self.write)

    def __call__(self, document: Document) -> Iterator[Region]:
        for region in super().__call__(document):
            found = SAVE_AS.search(document.text[: region.start].rstrip())
            if found is not None:
                region.parsed = (found["path"], str(region.lexemes["source"]))
                yield region

    @staticmethod
    def write(example: Example) -> None:
        world: DocWorld = example.namespace["__docworld__"]
        path, text = example.parsed
        target = world.cwd / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


# ---------------------------------------------------------------------------- the world


class DocWorld:
    """What a page's blocks run against: an emulator, a store, a home, a working directory."""

    def __init__(self, page: str, root: Path, s3_endpoint: str) -> None:
        from vastkit.emulator import Emulator, ProcessRunner, Timings

        store_env = {
            "AWS_ENDPOINT_URL": s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

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
            # The store's endpoint and credentials reach every container like Vast's
            # account-level environment variables: a worker gets no other way to moto.
            runner=ProcessRunner(root / "containers", grace_s=5.0, extra_env=store_env),
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
            **store_env,
            "COLUMNS": "120",
            # The emulator starts instances in a second: jobs and Instance blocks look at it
            # every second, as docs/concepts/configuration.md advises for the emulator.
            "VASTKIT_POLL_INTERVAL": "1",
        }
        for drop in ("VASTKIT_CONFIG", "VASTKIT_ENV", "VASTKIT_STORE_URL", "VASTKIT_PROFILES"):
            self.mp.delenv(drop, raising=False)
        for key, value in self.env.items():
            self.mp.setenv(key, value)
        self.mp.chdir(self.cwd)
        self.printed: dict[str, str] = {}
        """What ``vastkit emulator serve`` printed (``VAST_URL``, ``VAST_API_KEY``)."""

    def export(self, assignments: list[str]) -> None:
        """``export A=B C=D``: a ``<...>`` placeholder gets what ``vastkit emulator serve``
        printed, and so does a loopback ``VAST_URL`` (the page's port was swapped for a free
        one); without one served on this page, the page's own emulator stands for the one the
        reader started in another shell."""
        served = self.printed or {"VAST_URL": self.emu.url, "VAST_API_KEY": self.emu.api_key}
        for item in assignments:
            key, _, value = item.partition("=")
            if value == "<>" or (key == "VAST_URL" and "127.0.0.1" in value):
                assert key in served, f"{item}: nothing printed a value for {key}"
                value = served[key]
            self.env[key] = value
            self.mp.setenv(key, value)

    def serve_cli_emulator(self, words: list[str]) -> None:
        """Start ``vastkit emulator serve`` in the background; keep the URL and key it prints.

        The page's ``--port N`` becomes ``--port 0`` (a free port), so that pages served at
        once (pytest-xdist) or an emulator the developer runs never collide.
        """
        words = list(words)
        for i, word in enumerate(words[:-1]):
            if word == "--port":
                words[i + 1] = "0"
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
        self.printed = {}
        while "VAST_API_KEY" not in self.printed:
            line = lines.next()
            assert line is not None, f"{' '.join(words)} ended: {lines.seen}"
            if found := re.search(r"https?://127\.0\.0\.1:\d+", line):
                self.printed["VAST_URL"] = found[0]
            if found := re.search(r"API key:\s*(\S+)", line):
                self.printed["VAST_API_KEY"] = found[1]

    def run_command(self, command: str) -> str:
        """Run one command line with bash (``-euo pipefail``), the page's environment and the
        venv on PATH; its stdout.

        A line that shows an exit code (``cmd; echo $?``) runs without ``-e``, so the code is
        printed rather than ending the line; any other failure fails the block (``cmd || true``
        is how a page says a failure is fine).
        """
        env = dict(self.env)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        flags = "-uo" if re.search(r";\s*echo \$\?$", command) else "-euo"
        done = self.procs.run(
            ["bash", flags, "pipefail", "-c", command], cwd=self.cwd, env=env, text=True
        )
        assert done.returncode == 0, (
            f"$ {command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return str(done.stdout)

    def close(self) -> None:
        try:
            self.procs.close()
            self.emu.close()
            kill_left_behind(self.root / "containers")
        finally:
            self.mp.undo()


def kill_left_behind(containers: Path) -> None:
    """Kill what the page's containers left running: the emulator's ProcessRunner signals an
    instance's process group only while the onstart's bash lives, so the self-destroy backstop
    an onstart starts in the background outlives an instance whose onstart ended (it would loop
    until its deadline, hours away). Found by ``HOME``, which the runner sets to the
    instance's folder."""
    home = f"HOME={containers}{os.sep}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if any(v.startswith(home) for v in (proc / "environ").read_bytes().split(b"\0")):
                os.kill(int(proc.name), signal.SIGKILL)


# ---------------------------------------------------------------------------- collection


SYBIL = Sybil(
    parsers=[
        PythonCodeBlockParser(),
        *(CodeBlockParser(language, evaluate_shell) for language in SHELL_LANGUAGES),
        SavedFileParser(),
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


def _page_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


@pytest.fixture(scope="module")
def buckets(s3_server: str) -> str:
    """Moto's S3 server with the buckets the pages name; its endpoint."""
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
    return s3_server


def _failure(block: str, exc: BaseException) -> str:
    lines = traceback.format_exception(exc)
    text = "".join(lines[-12:]) if len(lines) > 12 else "".join(lines)
    return f"--- {block}\n{text}"


@pytest.mark.parametrize("path", DOCS, ids=_page_id)
def test_page(path: Path, buckets: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every block of the page runs as pasted, in page order, in one world (python blocks
    in-process, shell commands in subprocesses).

    One test per page, so that a page's blocks never run apart (pytest-xdist hands out tests
    one by one; a page's later blocks need what its earlier ones defined). A failing block does
    not stop the page: every failure is reported, each under its ``<page>:<line>``.
    """
    document, examples = PARSED[path]
    world = DocWorld(_page_id(path), tmp_path_factory.mktemp("doc"), buckets)
    document.namespace["__docworld__"] = world
    failures: list[str] = []
    try:
        for example in examples:
            block = _block_id(path, example)
            if block in WHOLE_JOBS:
                continue
            try:
                example.evaluate()
            except SkipTest:
                continue  # <!-- skip: next "reason" -->, a block that needs a real account
            except Exception as exc:
                if block not in KNOWN_FAILURES:
                    failures.append(_failure(block, exc))
                continue
            if block in KNOWN_FAILURES:
                failures.append(
                    f"--- {block}\npasses now: remove it from KNOWN_FAILURES "
                    f"(listed as: {KNOWN_FAILURES[block]})"
                )
    finally:
        world.close()
    assert not failures, f"{len(failures)} block(s) of {_page_id(path)} failed:\n" + "\n".join(
        failures
    )


def test_listed_blocks_exist() -> None:
    """Every block that KNOWN_FAILURES or WHOLE_JOBS names is one of the collected blocks: an
    entry left behind by an edit that moved its block would otherwise mark nothing."""
    blocks = {
        _block_id(path, example) for path, (_, examples) in PARSED.items() for example in examples
    }
    stale = sorted((set(KNOWN_FAILURES) | set(WHOLE_JOBS)) - blocks)
    assert not stale, f"no such block (moved? the line is where its fence starts): {stale}"
