"""The ``vastkit`` command: a thin shell over the public API.

Every subcommand works against the real Vast.ai API or, with ``--url``, against the emulator
(``vastkit emulator serve``). Data commands take ``--json``; tables are drawn with rich in a
terminal and written as plain aligned text when the output is piped. A failure prints one line,
``vastkit: error: ...``, on standard error and exits with the code of its class
(:data:`EXIT_CODES`); ``--debug`` adds the traceback.

Run ``vastkit --help`` or ``vastkit COMMAND --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import enum
import json
import logging
import math
import os
import stat
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn

import attrs
from rich.console import Console
from rich.table import Table

from vastkit._version import __version__
from vastkit.errors import (
    APIConnectionError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    DestroyFailedError,
    NoOfferError,
    PermissionDeniedError,
    VastkitError,
)

if TYPE_CHECKING:  # imported lazily at run time, so that ``vastkit --help`` stays fast
    from vastkit.api.client import Client
    from vastkit.ledger import Ledger

__all__ = ["EXIT_CODES", "ExitCode", "build_parser", "exit_code_for", "main"]

logger = logging.getLogger("vastkit.cli")


class ExitCode(enum.IntEnum):
    """The exit status of ``vastkit``, one per class of failure."""

    OK = 0
    """Success."""
    ERROR = 1
    """Any other vastkit error (an API error, a ledger or checkpoint error...)."""
    USAGE = 2
    """Bad command line, or bad configuration (:class:`~vastkit.errors.ConfigError`): a profiles,
    budgets or job file, a missing API key."""
    AUTH = 3
    """The API refused the key (401, 403)."""
    NO_OFFER = 4
    """No offer satisfies the profile."""
    BUDGET = 5
    """A budget forbids the spend (refused before renting, or the job ended ``budget_exceeded``)."""
    UNREACHABLE = 6
    """The API could not be reached (connection refused, DNS, timeout)."""
    JOB_FAILED = 7
    """The job ran but did not succeed (``failed``, ``timed_out``, ``cancelled``)."""
    DESTROY_FAILED = 8
    """An instance could not be confirmed destroyed: it may still be billing."""
    INTERRUPTED = 130
    """Interrupted with Ctrl-C (SIGINT)."""


EXIT_CODES: Final[Mapping[int, str]] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "other vastkit error (API error, ledger, checkpoint...)",
    ExitCode.USAGE: "bad command line or configuration (profiles/budgets/job file, no API key)",
    ExitCode.AUTH: "the API key was refused (401/403)",
    ExitCode.NO_OFFER: "no offer satisfies the profile",
    ExitCode.BUDGET: "a budget forbids the spend",
    ExitCode.UNREACHABLE: "the API could not be reached",
    ExitCode.JOB_FAILED: "the job ended without success (failed, timed_out, cancelled)",
    ExitCode.DESTROY_FAILED: "an instance could not be confirmed destroyed (it may still bill)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}
"""Every exit status ``vastkit`` uses, with its meaning (also shown by ``vastkit --help``)."""

_EXIT_HELP = "exit codes:\n" + "\n".join(
    f"  {int(code):>3}  {text}" for code, text in EXIT_CODES.items()
)

_ENV_HELP = """environment:
  VAST_API_KEY      the API key (or --api-key-env NAME, --api-key-file PATH,
                    ~/.config/vastai/vast_api_key)
  VAST_URL          the API base URL (--url); point it at `vastkit emulator serve`
  VASTKIT_LEDGER    the ledger database (--ledger)"""


class _UsageError(Exception):
    """A command-line mistake found after parsing (exit 2)."""


# --------------------------------------------------------------------------------------------
# Output


def _jsonable(value: Any) -> Any:
    """Turn attrs values, enums, mappings and tuples into plain JSON values."""
    if attrs.has(type(value)):
        return {
            field.name: _jsonable(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if field.repr is not False and not field.name.startswith("_")
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class _Out:
    """Where a command writes: stdout for data, stderr for messages; rich only in a terminal."""

    def __init__(self, stdout: IO[str], stderr: IO[str], *, json_mode: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.json_mode = json_mode
        self.console = Console(file=stdout, highlight=False)
        self.err_console = Console(file=stderr, highlight=False)

    @property
    def terminal(self) -> bool:
        """Whether standard output is a terminal (tables and colours) or piped (plain text)."""
        return bool(self.console.is_terminal)

    def json(self, value: Any) -> None:
        """Write one JSON document on standard output."""
        self.stdout.write(json.dumps(_jsonable(value), indent=2) + "\n")
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        """Write one line of text on standard output."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def note(self, text: str) -> None:
        """Write a message for people on standard error."""
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
        right: Sequence[str] = (),
    ) -> None:
        """A rich table in a terminal; plain space-aligned columns when piped."""
        if self.terminal:
            table = Table(title=title)
            for column in columns:
                table.add_column(column, justify="right" if column in right else "left")
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        widths = [len(c) for c in columns]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

        def fmt(cells: Sequence[str]) -> str:
            parts = [
                cell.rjust(w) if col in right else cell.ljust(w)
                for cell, w, col in zip(cells, widths, columns, strict=True)
            ]
            return "  ".join(parts).rstrip()

        lines = [fmt(columns), *(fmt(row) for row in rows)]
        if title:
            lines.insert(0, title)
        self.line("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Shared state of one invocation


class _Context:
    """The parsed options, the outputs, and the client and ledger made on first use."""

    def __init__(self, args: argparse.Namespace, out: _Out, argv: Sequence[str]) -> None:
        self.args = args
        self.out = out
        self.argv = list(argv)
        self._stack = contextlib.ExitStack()
        self._client: Client | None = None
        self._ledger: Ledger | None = None

    def opt(self, name: str, default: Any = None) -> Any:
        return getattr(self.args, name, default)

    def api_key(self) -> str | None:
        """The key from ``--api-key-file`` or ``--api-key-env``; None: the client's own search."""
        key_file = self.opt("api_key_file")
        key_env = self.opt("api_key_env")
        if key_file is not None:
            path = Path(key_file).expanduser()
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the API key file: {exc.strerror or exc}", path=str(path)
                ) from exc
            if not text:
                raise ConfigError("the API key file is empty", path=str(path))
            with contextlib.suppress(OSError):
                if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
                    self.out.note(
                        f"vastkit: warning: the API key file {path} is readable by other users; "
                        f"run `chmod 600 {path}`"
                    )
            return text
        if key_env is not None:
            text = os.environ.get(key_env, "").strip()
            if not text:
                raise ConfigError(
                    f"the environment variable {key_env} (from --api-key-env) is not set or empty"
                )
            return text
        return None

    @property
    def client(self) -> Client:
        if self._client is None:
            from vastkit.api.client import Client

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                client = Client(
                    self.api_key(),
                    base_url=self.opt("url"),
                    max_retries=self.opt("retries", 3),
                    timeout=self.opt("timeout", 60.0),
                )
            for warning in caught:
                self.out.note(f"vastkit: warning: {warning.message}")
            self._client = self._stack.enter_context(client)
        return self._client

    def ledger_path(self) -> Path:
        from vastkit.ledger import default_ledger_path

        given = self.opt("ledger")
        return Path(given).expanduser() if given else default_ledger_path()

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from vastkit.ledger import Ledger

            self._ledger = self._stack.enter_context(Ledger(self.ledger_path()))
        return self._ledger

    def existing_ledger(self) -> Ledger | None:
        """The ledger when its file exists (read-only commands never create one)."""
        if self._ledger is None and not self.ledger_path().exists():
            return None
        return self.ledger

    def close(self) -> None:
        self._stack.close()


# --------------------------------------------------------------------------------------------
# Small helpers


def _money(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _age(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _parse_date(text: str, *, end: bool = False) -> float:
    """``YYYY-MM-DD`` (UTC; as an end, the whole day is included), ISO 8601, or Unix seconds."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        day = None
    if day is not None and len(value) == 10:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        if end:
            start += dt.timedelta(days=1)
        return start.timestamp()
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _UsageError(
            f"cannot read {text!r} as a date: use YYYY-MM-DD, an ISO 8601 time or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _instance_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _UsageError(f"instance id must be a whole number, got {text!r}") from None
    if value <= 0:
        raise _UsageError(f"instance id must be positive, got {value}")
    return value


# --------------------------------------------------------------------------------------------
# offers


def _cmd_offers(ctx: _Context) -> int:
    args = ctx.args
    limit: int = args.limit
    if limit <= 0:
        raise _UsageError(f"--limit must be positive, got {limit}")
    if args.profile is not None and args.query:
        raise _UsageError("give either --profile NAME or a QUERY, not both")
    if args.profile is None:
        if args.explain:
            raise _UsageError("--explain needs --profile NAME (it checks offers against one)")
        return _offers_by_query(ctx, limit)
    return _offers_by_profile(ctx, limit)


def _offers_by_query(ctx: _Context, limit: int) -> int:
    args = ctx.args
    text = " ".join(args.query)
    try:
        offers = ctx.client.search_offers(
            text or None, type=args.type, order=args.order or "dph+", limit=limit
        )
    except ValueError as exc:
        raise _UsageError(f"bad query: {exc}") from exc
    bid = args.type in ("interruptible", "bid")
    rows: list[dict[str, Any]] = []
    for rank, offer in enumerate(offers[:limit], start=1):
        price = offer.dph_total
        if bid and offer.min_bid is not None:
            price = offer.min_bid + (offer.dph_total - offer.dph_base)
        rows.append(
            {
                "rank": rank,
                "offer_id": offer.id,
                "machine_id": offer.machine_id,
                "num_gpus": offer.num_gpus,
                "gpu_name": offer.gpu_name,
                "gpu_ram_gb": round(offer.gpu_ram_mb / 1000, 1),
                "effective_dph": round(price, 6),
                "bid": offer.min_bid if bid else None,
                "dlperf": offer.dlperf,
                "perf_per_dollar": round((offer.dlperf or 0.0) / price, 3) if price > 0 else None,
                "reliability": offer.reliability,
                "location": offer.geolocation,
                "verified": offer.verified,
            }
        )
    if ctx.out.json_mode:
        ctx.out.json({"query": text, "type": args.type or "on-demand", "offers": rows})
        return ExitCode.OK
    _offer_table(ctx, rows, title=f"Offers for {text or '(default filters)'}")
    return ExitCode.OK


_EXPLAIN_DROPPED: Final = (
    "reliability",
    "dph_total",
    "disk_space",
    "duration",
    "verified",
    "datacenter",
    "geolocation",
    "gpu_ram",
    "cuda_max_good",
    "inet_down",
)


def _offers_by_profile(ctx: _Context, limit: int) -> int:
    from vastkit.profiles import get_profile
    from vastkit.selector import build_query, explain

    args = ctx.args
    profile = get_profile(args.profile, args.profiles)
    if args.type is not None and args.type != profile.rental:
        if args.type == "interruptible":
            profile = attrs.evolve(profile, rental="interruptible", max_bid=None)
        else:
            profile = attrs.evolve(profile, rental="on-demand", max_bid=None)
    query = build_query(profile)
    if args.explain:
        # The server applies the profile's filters, so a narrow search hides why offers fail:
        # search for the GPU model and count only, and let the selector give every reason.
        for column in _EXPLAIN_DROPPED:
            query = query.without(column)
    offers = ctx.client.search_offers(query)
    now = time.time()
    ledger = ctx.existing_ledger()
    blocked = ledger.blocked_machines(now) if ledger is not None else frozenset()
    explanation = explain(profile, offers, now=now, blocked=blocked)
    rows = [
        {
            "rank": rank,
            "offer_id": c.offer.id,
            "machine_id": c.offer.machine_id,
            "num_gpus": c.offer.num_gpus,
            "gpu_name": c.offer.gpu_name,
            "gpu_ram_gb": round(c.offer.gpu_ram_mb / 1000, 1),
            "effective_dph": round(c.effective_dph, 6),
            "gpu_dph": round(c.gpu_dph, 6),
            "storage_dph": round(c.storage_dph, 6),
            "bid": c.bid,
            "dlperf": c.offer.dlperf,
            "perf_per_dollar": round(c.perf_per_dollar, 3),
            "reliability": c.offer.reliability,
            "location": c.offer.geolocation,
            "verified": c.offer.verified,
        }
        for rank, c in enumerate(explanation.candidates[:limit], start=1)
    ]
    if ctx.out.json_mode:
        doc: dict[str, Any] = {
            "profile": profile.name,
            "rental": profile.rental,
            "max_dph": profile.max_dph,
            "considered": explanation.considered,
            "qualifying": len(explanation.candidates),
            "offers": rows,
        }
        if args.explain:
            doc["rejected_by_reason"] = {
                reason.value: n for reason, n in explanation.counts().items()
            }
            doc["rejections"] = [
                {
                    "offer_id": r.offer.id,
                    "machine_id": r.offer.machine_id,
                    "reasons": [reason.value for reason in r.reasons],
                    "details": list(r.details),
                }
                for r in explanation.rejections
            ]
        ctx.out.json(doc)
    else:
        if rows:
            _offer_table(
                ctx,
                rows,
                title=(
                    f"Profile {profile.name!r} ({profile.rental}, max ${profile.max_dph:g}/h "
                    f"for the whole instance): {len(explanation.candidates)} of "
                    f"{explanation.considered} offers qualify"
                ),
            )
        if args.explain:
            _explain_text(ctx, explanation)
    if not explanation.candidates:
        raise NoOfferError(
            f"no offer qualifies: {explanation.summary()}"
            + ("" if args.explain else " (run with --explain for every reason)"),
            explanation=explanation,
        )
    return ExitCode.OK


def _offer_table(ctx: _Context, rows: Sequence[Mapping[str, Any]], *, title: str) -> None:
    columns = [
        "#",
        "offer",
        "machine",
        "gpus",
        "$/h eff",
        "bid",
        "perf/$",
        "reliab",
        "location",
    ]
    cells = [
        [
            str(r["rank"]),
            str(r["offer_id"]),
            str(r["machine_id"]),
            f"{r['num_gpus']}x {r['gpu_name']} {r['gpu_ram_gb']:g}GB",
            _money(r["effective_dph"]),
            _money(r["bid"]),
            "-" if r["perf_per_dollar"] is None else f"{r['perf_per_dollar']:.1f}",
            f"{r['reliability']:.3f}",
            r["location"] or "-",
        ]
        for r in rows
    ]
    if not cells:
        ctx.out.note("vastkit: no offers")
        return
    ctx.out.table(
        columns,
        cells,
        title=title,
        right=("#", "offer", "machine", "$/h eff", "bid", "perf/$", "reliab"),
    )


def _explain_text(ctx: _Context, explanation: Any) -> None:
    counts = explanation.counts()
    ctx.out.line(explanation.summary())
    if counts:
        ctx.out.table(
            ["reason", "offers"],
            [[reason.value, str(n)] for reason, n in counts.items()],
            title="Rejected offers per reason (an offer counts once per failed check)",
            right=("offers",),
        )
        shown = explanation.rejections[:10]
        ctx.out.line(f"first {len(shown)} of {len(explanation.rejections)} rejections:")
        for rejection in shown:
            ctx.out.line(f"  {rejection}")


# --------------------------------------------------------------------------------------------
# ps, stop, destroy, logs, reap


def _cmd_ps(ctx: _Context) -> int:
    from vastkit.instance import parse_label

    instances = ctx.client.list_instances()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for inst in instances:
        parsed = parse_label(inst.label)
        if ctx.args.ours and parsed is None:
            continue
        rows.append(
            {
                "id": inst.id,
                "label": inst.label,
                "ours": parsed is not None,
                "run_id": parsed[0] if parsed else None,
                "attempt": parsed[1] if parsed else None,
                "state": inst.state.value,
                "actual_status": inst.actual_status,
                "status_msg": inst.status_msg,
                "gpu": f"{inst.num_gpus or '?'}x {inst.gpu_name}" if inst.gpu_name else None,
                "dph_total": inst.dph_total,
                "is_bid": inst.is_bid,
                "age_s": None if inst.start_date is None else round(now - inst.start_date, 1),
                "machine_id": inst.machine_id,
                "location": inst.geolocation,
            }
        )
    if ctx.out.json_mode:
        ctx.out.json({"instances": rows})
        return ExitCode.OK
    if not rows:
        ctx.out.note("vastkit: no instances")
        return ExitCode.OK
    ctx.out.table(
        ["id", "label", "state", "gpu", "$/h", "age", "machine", "location"],
        [
            [
                str(r["id"]),
                (r["label"] or "-") + ("" if r["ours"] else " (not vastkit)"),
                r["state"] + (" (bid)" if r["is_bid"] else ""),
                r["gpu"] or "-",
                _money(r["dph_total"]),
                _age(r["age_s"]),
                str(r["machine_id"] or "-"),
                r["location"] or "-",
            ]
            for r in rows
        ],
        title=f"{len(rows)} instance(s)",
        right=("id", "$/h", "age", "machine"),
    )
    return ExitCode.OK


def _cmd_stop(ctx: _Context) -> int:
    instance_id = _instance_id(ctx.args.id)
    ctx.client.stop_instance(instance_id)
    if ctx.out.json_mode:
        ctx.out.json({"id": instance_id, "stopped": True})
    else:
        ctx.out.line(f"stopped instance {instance_id} (storage keeps billing until destroyed)")
    return ExitCode.OK


def _cmd_destroy(ctx: _Context) -> int:
    instance_id = _instance_id(ctx.args.id)
    destroyed = ctx.client.destroy_instance(instance_id)
    if ctx.out.json_mode:
        ctx.out.json({"id": instance_id, "destroyed": destroyed, "already_gone": not destroyed})
    elif destroyed:
        ctx.out.line(f"destroyed instance {instance_id}")
    else:
        ctx.out.line(f"instance {instance_id} was already gone")
    return ExitCode.OK


def _cmd_reap(ctx: _Context) -> int:
    from vastkit.reconcile import reconcile

    report = reconcile(ctx.client, ctx.ledger, dry_run=ctx.args.dry_run)
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "dry_run": report.dry_run,
                "listed": report.listed,
                "ours": report.ours,
                "destroyed": len(report.destroyed),
                "adopted": len(report.adopted),
                "left": len(report.left),
                "closed": len(report.closed),
                "failed": len(report.failed),
                "actions": list(report.actions),
            }
        )
    else:
        ctx.out.line(report.summary())
    if report.failed:
        ids = ", ".join(str(a.instance_id) for a in report.failed)
        raise DestroyFailedError(
            f"could not confirm the destruction of instance(s) {ids}: they may still bill; "
            "run `vastkit reap` again",
            instance_id=report.failed[0].instance_id or 0,
        )
    return ExitCode.OK


def _cmd_logs(ctx: _Context) -> int:
    target: str = ctx.args.target
    ledger = ctx.existing_ledger()
    run = ledger.get_run(target) if ledger is not None else None
    if run is None and ctx.args.store is None and ctx.args.job is None and target.isdigit():
        return _instance_logs(ctx, int(target))
    return _run_logs(ctx, target, run)


def _instance_logs(ctx: _Context, instance_id: int) -> int:
    tail = ctx.args.tail
    text = ctx.client.instance_logs(instance_id, tail=tail)
    ctx.out.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    ctx.out.stdout.flush()
    if not ctx.args.follow:
        return ExitCode.OK
    shown = text
    while True:
        time.sleep(ctx.args.interval)
        if ctx.client.get_instance(instance_id) is None:
            ctx.out.note(f"vastkit: instance {instance_id} is gone")
            return ExitCode.OK
        text = ctx.client.instance_logs(instance_id, tail=tail)
        new = text[len(shown) :] if text.startswith(shown) else text
        if new:
            ctx.out.stdout.write(new)
            ctx.out.stdout.flush()
        shown = text


def _run_logs(ctx: _Context, run_id: str, run: Any) -> int:
    from vastkit.rundir import RunDir

    options: Mapping[str, Any] = {}
    url: str | None = None
    if ctx.args.job is not None:
        from vastkit.jobs import Job

        job = Job.from_yaml(ctx.args.job)
        options = job.storage_options
        url = f"{job.store_url.rstrip('/')}/{run_id}"
    if ctx.args.store is not None:
        url = f"{ctx.args.store.rstrip('/')}/{run_id}"
    if url is None and run is not None:
        meta_url = run.metadata.get("run_url") if isinstance(run.metadata, Mapping) else None
        url = str(meta_url) if meta_url else None
    if url is None:
        where = "" if run is None else " (the ledger has no run directory for it)"
        raise _UsageError(
            f"{run_id!r} is neither a run in the ledger at {ctx.ledger_path()} nor an instance "
            f"id{where}; pass --store URL or --job FILE to name its store"
        )
    rundir = RunDir(url, options)
    attempts = rundir.attempts()
    if ctx.args.attempt is not None:
        attempts = [a for a in attempts if a == ctx.args.attempt] or [ctx.args.attempt]
    if not attempts and not ctx.args.follow:
        raise VastkitError(f"run {run_id} has no output yet at {url}")
    write = ctx.out.stdout.write
    if not ctx.args.follow:
        for number in attempts:
            if len(attempts) > 1:
                write(f"=== attempt {number} ===\n")
            data = rundir.read_log(number).decode("utf-8", errors="replace")
            if ctx.args.tail is not None:
                data = "\n".join(data.splitlines()[-ctx.args.tail :]) + "\n"
            write(data)
        ctx.out.stdout.flush()
        return ExitCode.OK
    number = attempts[-1] if attempts else 1
    while True:
        write(f"=== attempt {number} ===\n")
        for chunk in rundir.follow_log(number, poll_interval=ctx.args.interval):
            write(chunk.decode("utf-8", errors="replace"))
            ctx.out.stdout.flush()
        if ctx.args.attempt is not None or rundir.read_result() is not None:
            return ExitCode.OK
        while number + 1 not in rundir.attempts():
            if rundir.read_result() is not None:
                return ExitCode.OK
            time.sleep(ctx.args.interval)
        number += 1


# --------------------------------------------------------------------------------------------
# cost-report, profiles, budgets


def _cmd_cost_report(ctx: _Context) -> int:
    from vastkit.cost_report import cost_report

    args = ctx.args
    since = _parse_date(args.since) if args.since else None
    until = _parse_date(args.until, end=True) if args.until else None
    if args.csv and ctx.out.json_mode:
        raise _UsageError("give --csv or --json, not both")
    if since is not None and until is not None and until < since:
        raise _UsageError("--until is before --since")
    charges = None
    if args.compare_vast:
        end = until if until is not None else time.time()
        start = since if since is not None else end - 30 * 86400
        charges = ctx.client.charges(start, end)
    report = cost_report(ctx.ledger, args.by, since=since, until=until, charges=charges)
    if args.plot:
        try:
            written = report.to_png(args.plot)
        except ImportError as exc:
            raise VastkitError(str(exc)) from exc
        ctx.out.note(f"vastkit: wrote the chart to {written}")
    if args.csv:
        ctx.out.stdout.write(report.to_csv())
    elif ctx.out.json_mode:
        ctx.out.line(report.to_json())
    elif ctx.out.terminal:
        ctx.out.console.print(report.to_table())
    else:
        ctx.out.stdout.write(str(report))
    ctx.out.stdout.flush()
    return ExitCode.OK


def _cmd_profiles_list(ctx: _Context) -> int:
    from vastkit.profiles import builtin_profiles, load_profiles

    source = ctx.args.file
    profiles = builtin_profiles() if source is None else load_profiles(source)
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "source": source or "built-in",
                "profiles": {name: p.to_dict() for name, p in profiles.items()},
            }
        )
        return ExitCode.OK
    ctx.out.table(
        ["name", "gpu", "gpus", "max $/h", "rental", "reliab", "max hours", "disk GB"],
        [
            [
                name,
                ", ".join(p.gpu_name),
                str(p.num_gpus),
                f"{p.max_dph:g}",
                p.rental,
                f"{p.reliability_min:g}",
                f"{p.max_duration_hours:g}",
                f"{p.disk_gb:g}",
            ]
            for name, p in profiles.items()
        ],
        title=f"Profiles ({source or 'built-in'}); max $/h is for the whole instance, storage "
        "included",
        right=("gpus", "max $/h", "reliab", "max hours", "disk GB"),
    )
    return ExitCode.OK


def _cmd_profiles_validate(ctx: _Context) -> int:
    from vastkit.profiles import load_profiles

    profiles = load_profiles(Path(ctx.args.file))
    if ctx.out.json_mode:
        ctx.out.json({"file": ctx.args.file, "valid": True, "profiles": list(profiles)})
    else:
        ctx.out.line(f"{ctx.args.file}: OK, {len(profiles)} profile(s): {', '.join(profiles)}")
    return ExitCode.OK


def _cmd_budgets_validate(ctx: _Context) -> int:
    from vastkit.budget import load_budgets

    budgets = load_budgets(Path(ctx.args.file))
    limits = [*budgets.teams.values(), *budgets.projects.values()]
    if budgets.job is not None:
        limits.append(budgets.job)
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "file": ctx.args.file,
                "valid": True,
                "budgets": [
                    {
                        "scope": b.scope,
                        "name": b.name,
                        "limit_usd": b.limit_usd,
                        "period": b.period,
                        "team": b.team,
                        "warn_at": list(b.warn_at),
                    }
                    for b in limits
                ],
            }
        )
    else:
        ctx.out.line(f"{ctx.args.file}: OK, {len(limits)} budget(s)")
        for b in limits:
            team = f" (team {b.team})" if b.team else ""
            ctx.out.line(f"  {b.label}{team}: ${b.limit_usd:g} {b.period}")
    return ExitCode.OK


# --------------------------------------------------------------------------------------------
# launch, emulator, demo


_PROGRESS_EVERY_S: Final = 10.0
"""Least seconds between two ``progress`` events printed by ``vastkit launch``."""


def _cmd_launch(ctx: _Context) -> int:
    from vastkit.jobs import Job, run_job

    args = ctx.args
    job = Job.from_yaml(Path(args.job_file))
    if args.detach:
        return _launch_detached(ctx, job.name)
    last_progress = [-math.inf]

    def on_event(event: Any) -> None:
        if event.kind == "progress":
            if event.time - last_progress[0] < _PROGRESS_EVERY_S:
                return
            last_progress[0] = event.time
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        if ctx.out.err_console.is_terminal:
            ctx.out.err_console.print(f"[dim]{stamp}[/dim] {event.message}", markup=True)
        else:
            ctx.out.note(f"{stamp} {event.kind}: {event.message}")

    result = run_job(
        job,
        client=ctx.client,
        ledger=ctx.ledger,
        on_event=on_event,
        budgets=args.budgets,
        profiles=args.profiles,
        run_id=args.run_id,
        progress=False,
    )
    if ctx.out.json_mode:
        doc = _jsonable(result)
        doc["total_cost_usd"] = result.total_cost_usd
        doc["log_url"] = result.log_url
        ctx.out.json(doc)
    else:
        ctx.out.line(result.summary())
    if result.ok:
        return ExitCode.OK
    if result.status == "budget_exceeded":
        return ExitCode.BUDGET
    return ExitCode.JOB_FAILED


def _launch_detached(ctx: _Context, name: str) -> int:
    from vastkit.instance import new_run_id

    run_id = ctx.args.run_id or new_run_id()
    folder = ctx.ledger_path().parent / "orchestrators"
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{run_id}.log"
    argv = [a for a in ctx.argv if a != "--detach"]
    if ctx.args.run_id is None:
        argv += ["--run-id", run_id]
    command = [sys.executable, "-m", "vastkit.cli", *argv]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    if ctx.out.json_mode:
        ctx.out.json({"run_id": run_id, "name": name, "pid": process.pid, "log": str(log_path)})
    else:
        ctx.out.line(f"launched job {name!r} as run {run_id} (orchestrator pid {process.pid})")
        ctx.out.line(f"  orchestrator log: {log_path}")
        ctx.out.line(f"  follow it with:   vastkit logs {run_id} -f")
    return ExitCode.OK


def _cmd_emulator_serve(ctx: _Context) -> int:
    from vastkit.emulator.__main__ import main as emulator_main

    args = ctx.args
    forwarded = [
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--seed",
        str(args.seed),
        "--offers",
        str(args.offers),
        "--runner",
        args.runner,
        "--credit",
        str(args.credit),
    ]
    if args.speed is not None:
        forwarded += ["--speed", str(args.speed)]
    if args.no_rate_limits:
        forwarded.append("--no-rate-limits")
    with contextlib.redirect_stdout(ctx.out.stdout):
        return emulator_main(forwarded)


def _cmd_doctor(ctx: _Context) -> int:
    from vastkit.health import check

    args = ctx.args
    explicit = any(ctx.opt(name) is not None for name in ("url", "api_key_file", "api_key_env"))
    report = check(
        args.env,
        client=ctx.client if explicit else None,
        worker_probe=not args.no_worker_probe,
    )
    if ctx.out.json_mode:
        ctx.out.stdout.write(report.to_json() + "\n")
        ctx.out.stdout.flush()
    else:
        report.render(ctx.out.console)
    return ExitCode.OK if report.ok else ExitCode.ERROR


def _cmd_demo(ctx: _Context) -> int:
    from vastkit.demo import run_demo

    outcome = run_demo(out=ctx.out.stdout, seed=ctx.args.seed, prefer_s3=not ctx.args.no_s3)
    return ExitCode.OK if outcome.ok else ExitCode.JOB_FAILED


# --------------------------------------------------------------------------------------------
# The parser


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in vastkit's format and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _common() -> _Parser:
    """Options accepted before or after the subcommand (``vastkit --json ps`` = ``ps --json``)."""
    common = _Parser(add_help=False)
    s = argparse.SUPPRESS
    group = common.add_argument_group("global options")
    group.add_argument(
        "--url",
        default=s,
        metavar="URL",
        help="API base URL (default: $VAST_URL, else https://console.vast.ai); e.g. the "
        "emulator's http://127.0.0.1:8765",
    )
    group.add_argument(
        "--api-key-file",
        default=s,
        metavar="PATH",
        help="read the API key from this file (default: $VAST_API_KEY, then "
        "~/.config/vastai/vast_api_key, then ~/.vast_api_key)",
    )
    group.add_argument(
        "--api-key-env",
        default=s,
        metavar="NAME",
        help="read the API key from this environment variable (default VAST_API_KEY); the key "
        "itself is never taken on the command line",
    )
    group.add_argument(
        "--ledger",
        default=s,
        metavar="PATH",
        help="the ledger database (default: $VASTKIT_LEDGER, else "
        "~/.local/state/vastkit/ledger.db)",
    )
    group.add_argument(
        "--log-level",
        default=s,
        choices=("debug", "info", "warning", "error"),
        help="log vastkit's messages at this level and above to stderr (default warning)",
    )
    group.add_argument(
        "--debug", action="store_true", default=s, help="print the traceback on failure"
    )
    group.add_argument(
        "--json", action="store_true", default=s, help="write the data as JSON on stdout"
    )
    group.add_argument(
        "--retries",
        type=int,
        default=s,
        metavar="N",
        help="retries of an idempotent API call after 429/5xx/connection errors (default 3)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=s,
        metavar="SECONDS",
        help="seconds per API request (default 60)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``vastkit`` argument parser (exposed for the documentation and tests).

    Returns:
        The parser.
    """
    common = _common()
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="vastkit",
        description="Run GPU work on Vast.ai reliably and cheaply: offers, jobs, instances, "
        "costs, and a local emulator.",
        epilog=f"{_ENV_HELP}\n\n{_EXIT_HELP}",
        formatter_class=formatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"vastkit {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, required=True
    )

    def add_to(
        subparsers: argparse._SubParsersAction[_Parser],
        name: str,
        help_text: str,
        description: str | None = None,
    ) -> _Parser:
        return subparsers.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            parents=[common],
            formatter_class=formatter,
            epilog=_EXIT_HELP,
        )

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return add_to(sub, name, help_text, description)

    def actions(parent: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction[_Parser]:
        return parent.add_subparsers(
            dest=dest, metavar="ACTION", parser_class=_Parser, required=True
        )

    p = add(
        "offers",
        "search the marketplace and rank offers",
        "Rank offers for a profile (checked against every constraint, priced with storage, bid "
        "for interruptible) or for a free query in the official CLI's language, e.g.\n"
        "  vastkit offers --profile dev-test --explain\n"
        "  vastkit offers 'gpu_name=RTX_4090 num_gpus=1 reliability>0.98' --limit 5",
    )
    p.add_argument("query", nargs="*", metavar="QUERY", help="a query (instead of --profile)")
    p.add_argument("--profile", metavar="NAME", help="rank offers for this profile")
    p.add_argument(
        "--profiles", metavar="FILE", help="a gpu_profiles.yaml (default: the built-in profiles)"
    )
    p.add_argument(
        "--explain", action="store_true", help="show why offers were rejected, with counts"
    )
    p.add_argument("--limit", type=int, default=20, metavar="N", help="rows to show (20)")
    p.add_argument(
        "--type",
        choices=("on-demand", "interruptible"),
        default=None,
        help="rental type (default: the profile's, else on-demand)",
    )
    p.add_argument(
        "--order", metavar="ORDER", help="query mode: sort, e.g. 'dph+' (default) or 'score-'"
    )
    p.set_defaults(handler=_cmd_offers)

    p = add(
        "launch",
        "run a job from a YAML file and follow it to the end",
        "Run a job (see the Job guide for the YAML keys): rent, watch, recover from preemption, "
        "and print the result. The exit code is 0 only when the job succeeded.",
    )
    p.add_argument("job_file", metavar="JOB.yaml", help="the job file")
    p.add_argument(
        "--detach",
        action="store_true",
        help="run the orchestrator in the background and return at once with the run id",
    )
    p.add_argument("--budgets", metavar="FILE", help="a budgets.yaml to enforce")
    p.add_argument("--profiles", metavar="FILE", help="a gpu_profiles.yaml to resolve the profile")
    p.add_argument(
        "--run-id",
        metavar="ID",
        help="the run id; a run the ledger already knows is resumed (its live instance adopted)",
    )
    p.set_defaults(handler=_cmd_launch)

    p = add("ps", "list the account's instances (vastkit's and others)")
    p.add_argument("--ours", action="store_true", help="only instances with a vastkit/ label")
    p.set_defaults(handler=_cmd_ps)

    p = add(
        "logs",
        "print a run's logs from its store, or an instance's logs from the API",
        "TARGET is a run id (its run directory is found through the ledger, --store or --job) "
        "or an instance id.",
    )
    p.add_argument("target", metavar="RUN_OR_INSTANCE", help="a run id or an instance id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--attempt", type=int, metavar="N", help="only this attempt of the run")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.add_argument("--store", metavar="URL", help="the store the run directory is under")
    p.add_argument("--job", metavar="FILE", help="take the store and its options from a job file")
    p.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="poll interval with -f"
    )
    p.set_defaults(handler=_cmd_logs)

    p = add("stop", "stop an instance (GPU billing stops; storage keeps billing)")
    p.add_argument("id", metavar="ID", help="the instance id")
    p.set_defaults(handler=_cmd_stop)

    p = add("destroy", "destroy an instance (all billing stops; irreversible; no prompt)")
    p.add_argument("id", metavar="ID", help="the instance id")
    p.set_defaults(handler=_cmd_destroy)

    p = add(
        "reap",
        "reconcile the account with the ledger and destroy orphaned vastkit instances",
        "Destroy instances labelled vastkit/ that the ledger cannot account for, adopt live "
        "ones, close stale ledger rows. Instances without the vastkit/ label are never touched.",
    )
    p.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p.set_defaults(handler=_cmd_reap)

    p = add(
        "cost-report",
        "what was spent, from the ledger",
        "Group the ledger's spend. Dates are UTC: YYYY-MM-DD (an --until day is included), "
        "ISO 8601 or Unix seconds.",
    )
    p.add_argument(
        "--by",
        choices=("project", "team", "job", "gpu", "day"),
        default="project",
        help="grouping (project)",
    )
    p.add_argument("--since", metavar="DATE", help="start of the window")
    p.add_argument("--until", metavar="DATE", help="end of the window")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="write CSV on stdout")
    p.add_argument("--plot", metavar="FILE", help="also draw cumulative spend into a PNG")
    p.add_argument(
        "--compare-vast",
        action="store_true",
        help="also fetch Vast's charges for the window and show the difference",
    )
    p.set_defaults(handler=_cmd_cost_report)

    psub = actions(add("profiles", "list or validate GPU profiles"), "profiles_command")
    q = add_to(psub, "list", "list profiles", "List the profiles of FILE, or the built-in ones.")
    q.add_argument("file", nargs="?", metavar="FILE", help="a gpu_profiles.yaml")
    q.set_defaults(handler=_cmd_profiles_list)
    q = add_to(
        psub,
        "validate",
        "check a gpu_profiles.yaml",
        "Check a gpu_profiles.yaml; a mistake is reported with its file, line and key (exit 2).",
    )
    q.add_argument("file", metavar="FILE", help="a gpu_profiles.yaml")
    q.set_defaults(handler=_cmd_profiles_validate)

    bsub = actions(add("budgets", "validate budgets"), "budgets_command")
    q = add_to(
        bsub,
        "validate",
        "check a budgets.yaml",
        "Check a budgets.yaml; a mistake is reported with its file, line and key (exit 2).",
    )
    q.add_argument("file", metavar="FILE", help="a budgets.yaml")
    q.set_defaults(handler=_cmd_budgets_validate)

    esub = actions(add("emulator", "the local Vast marketplace"), "emulator_command")
    q = add_to(
        esub,
        "serve",
        "serve the emulator on loopback until Ctrl-C",
        "Serve the Vast emulator; point other commands at it with --url (or VAST_URL) and "
        "VAST_API_KEY set to the key it prints.",
    )
    q.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    q.add_argument("--port", type=int, default=8765, help="port (8765; 0 for a free one)")
    q.add_argument("--seed", type=int, default=0, help="catalog and randomness seed (0)")
    q.add_argument("--offers", type=int, default=2000, help="catalog size (2000)")
    q.add_argument("--speed", type=float, default=None, help="run time N times faster")
    q.add_argument("--credit", type=float, default=100.0, help="starting credit in $ (100)")
    q.add_argument(
        "--runner",
        choices=("scripted", "process"),
        default="process",
        help="run onstart scripts as local processes (process) or not (scripted)",
    )
    q.add_argument("--no-rate-limits", action="store_true", help="turn rate limits off")
    q.set_defaults(handler=_cmd_emulator_serve)

    p = add(
        "doctor",
        "check that everything is ready: key, balance, store, profiles, budgets, ledger, clock",
        "Run the health checks of `vastkit.check()`: the API key is accepted (and the balance),\n"
        "the store is writable with the credentials a worker would receive, the profiles and\n"
        "budgets files parse, the ledger opens and reconciles (dry run), and the local clock\n"
        "agrees with the API's. Each failing item says how to fix it; exit 1 if any failed.",
    )
    p.add_argument(
        "--env",
        metavar="NAME",
        help="the config environment (default: $VASTKIT_ENV, else the config file's default)",
    )
    p.add_argument(
        "--no-worker-probe",
        action="store_true",
        help="skip probing the store from a separate process with only the worker's credentials",
    )
    p.set_defaults(handler=_cmd_doctor)

    p = add(
        "demo",
        "run a fault-tolerant training job on the local emulator (no account needed)",
        "Start the emulator and a local S3 store, run a small PyTorch job on an interruptible "
        "GPU, get it outbid, and watch it resume from its checkpoint on another machine.",
    )
    p.add_argument("--seed", type=int, default=0, help="the emulator's seed (0)")
    p.add_argument(
        "--no-s3", action="store_true", help="use a local folder instead of moto's S3 server"
    )
    p.set_defaults(handler=_cmd_demo)
    return parser


# --------------------------------------------------------------------------------------------
# Errors and the entry point


def exit_code_for(exc: BaseException) -> int:
    """The exit status for an exception (see :data:`EXIT_CODES`).

    Args:
        exc: What went wrong.

    Returns:
        The exit status.
    """
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, _UsageError | ConfigError):
        return ExitCode.USAGE
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return ExitCode.AUTH
    if isinstance(exc, NoOfferError):
        return ExitCode.NO_OFFER
    if isinstance(exc, BudgetExceededError):
        return ExitCode.BUDGET
    if isinstance(exc, APIConnectionError):
        return ExitCode.UNREACHABLE
    if isinstance(exc, DestroyFailedError):
        return ExitCode.DESTROY_FAILED
    return ExitCode.ERROR


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _message(exc: BaseException, ctx: _Context | None) -> str:
    text = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, AuthenticationError):
        source = "the key"
        if ctx is not None and ctx.opt("api_key_file"):
            source = f"the key in {ctx.opt('api_key_file')}"
        elif ctx is not None and ctx.opt("api_key_env"):
            source = f"the key in ${ctx.opt('api_key_env')}"
        elif os.environ.get("VAST_API_KEY"):
            source = "the key in $VAST_API_KEY"
        text = f"the API refused {source}: {text}"
    elif isinstance(exc, APIConnectionError):
        url = ctx.opt("url") if ctx is not None else None
        url = url or os.environ.get("VAST_URL") or "https://console.vast.ai"
        text = f"cannot reach the API at {url}: {text}"
    return text


@contextlib.contextmanager
def _logging_to(stream: IO[str], level: str | None) -> Iterator[None]:
    """Send vastkit's log records to ``stream`` for the duration of the command."""
    log = logging.getLogger("vastkit")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("vastkit: %(levelname)s: %(name)s: %(message)s"))
    handler.setLevel(getattr(logging, (level or "warning").upper()))
    old_level = log.level
    log.addHandler(handler)
    if level is not None:
        log.setLevel(handler.level)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vastkit`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Args:
        argv: The arguments, without the program name.

    Returns:
        The exit status (see :data:`EXIT_CODES`); nothing is raised.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    stdout, stderr = sys.stdout, sys.stderr
    parser = build_parser()
    ctx: _Context | None = None
    debug = "--debug" in args_list
    try:
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else ExitCode.USAGE
        debug = bool(getattr(args, "debug", False))
        handler = args.handler
        out = _Out(stdout, stderr, json_mode=bool(getattr(args, "json", False)))
        ctx = _Context(args, out, args_list)
        level = getattr(args, "log_level", None)
        if level is None and args.command == "demo":
            level = "error"  # the demo narrates every event itself; warnings would repeat it
        with _logging_to(stderr, level):
            try:
                return int(handler(ctx))
            finally:
                ctx.close()
    except KeyboardInterrupt:
        stderr.write("vastkit: interrupted\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
        return ExitCode.ERROR
    except (VastkitError, _UsageError, ValueError, OSError) as exc:
        if debug:
            traceback.print_exc(file=stderr)
        code: int
        if isinstance(exc, ValueError | OSError) and not isinstance(exc, VastkitError):
            code = ExitCode.USAGE if isinstance(exc, ValueError) else ExitCode.ERROR
        else:
            code = exit_code_for(exc)
        stderr.write(f"vastkit: error: {_message(exc, ctx)}\n")
        stderr.flush()
        return code
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        if debug:
            traceback.print_exc(file=stderr)
        hint = "" if debug else " (run with --debug for the traceback)"
        stderr.write(
            f"vastkit: error: internal error: {type(exc).__name__}: {_one_line(str(exc))}{hint}\n"
        )
        stderr.flush()
        return ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())
