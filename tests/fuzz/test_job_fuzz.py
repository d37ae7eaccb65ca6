"""Issue 16: bad input never costs money. Generated job files, valid and mutated (wrong types,
negatives, NaN and infinities, 400-digit numbers, unknown keys, nested garbage, missing keys,
broken YAML), go through ``Job.from_yaml`` and ``run_job``.

Each example asserts one of:

- a ``VastkitError`` (``ConfigError``, ``BudgetExceededError``...) before any API call: the
  client's transport counts every request and none was made;
- the job is accepted: ``Job.from_yaml`` succeeds and ``run_job`` gets as far as the API (the
  tripwire transport answers the first request with Vast's 401, so nothing is rented and the
  example stays fast).

No other exception may escape. A sample of valid documents runs to the end on the in-process
emulator in virtual time (:func:`test_a_sample_of_valid_job_files_runs_on_the_emulator`).

Example budget: :data:`FUZZ_EXAMPLES` for the main property, :data:`RUN_EXAMPLES` full runs,
raised or lowered here on purpose; ``--hypothesis-show-statistics`` prints the outcome counts.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import fsspec
import httpx
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests._support.world import BID_PROFILE, FAST, ON_DEMAND, FakeWorkers, HookedClock
from vastkit.api.client import Client
from vastkit.clock import ManualClock
from vastkit.emulator import Timings, serve
from vastkit.errors import VastkitError
from vastkit.jobs import Job, run_job
from vastkit.ledger import Ledger

FUZZ_EXAMPLES = 400
RUN_EXAMPLES = 20
PROFILES = {"test-4090": ON_DEMAND, "test-bid": BID_PROFILE}
STORE = "memory://job-fuzz"

# -- valid documents --------------------------------------------------------------------------

_words = st.text("abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12).filter(
    lambda s: s.strip("-_")
)
_seconds = st.floats(1.0, 3600.0, allow_nan=False)


@st.composite
def timeouts(draw: st.DrawFn) -> dict[str, Any]:
    """A subset of JobTimeouts that satisfies the cross-field rules."""
    poll = draw(st.floats(1.0, 60.0))
    beat = draw(st.floats(1.0, 60.0))
    values: dict[str, Any] = {
        "poll_interval": poll,
        "heartbeat_interval": beat,
        "heartbeat_stale": beat * draw(st.floats(1.5, 10.0)),
        "orchestrator_timeout": draw(st.none() | st.just(poll * draw(st.floats(2.5, 50.0)))),
    }
    for name in ("provisioning", "loading", "running", "destroy", "relaunch_delay"):
        if draw(st.booleans()):
            values[name] = draw(_seconds)
    if draw(st.booleans()):
        values["max_duration"] = draw(st.none() | _seconds)
    bound = ("heartbeat_interval", "heartbeat_stale", "poll_interval", "orchestrator_timeout")
    return {k: v for k, v in values.items() if k in bound or draw(st.booleans())}


@st.composite
def checkpoints(draw: st.DrawFn) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if draw(st.booleans()):
        values["every_steps"] = draw(st.none() | st.just("auto") | st.integers(1, 10_000))
    if draw(st.booleans()):
        values["every_seconds"] = draw(st.none() | _seconds)
    if draw(st.booleans()):
        values["keep_last"] = draw(st.integers(1, 20))
    if draw(st.booleans()):
        values["keep_best"] = draw(st.integers(0, 5))
        values["best_metric"] = draw(_words)
        values["best_mode"] = draw(st.sampled_from(["min", "max"]))
    if draw(st.booleans()):
        values["async_save"] = draw(st.booleans())
    return values


_inline_profile = st.fixed_dictionaries(
    {"gpu_name": st.sampled_from(["RTX_4090", "RTX 3090"]), "max_dph": st.floats(0.05, 2.0)},
    optional={
        "rental": st.sampled_from(["on-demand", "interruptible"]),
        "disk_gb": st.floats(8.0, 200.0),
        "max_duration_hours": st.floats(1.0, 200.0),
        "reliability_min": st.floats(0.5, 0.99),
    },
)


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": draw(_words),
        "command": draw(
            st.sampled_from(["python train.py", ["python", "train.py", "--epochs", "3"]])
        ),
        "profile": draw(st.sampled_from(sorted(PROFILES)) | _inline_profile),
        "store_url": f"{STORE}/{draw(_words)}",
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "env": st.dictionaries(
            st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True),
            _words | st.integers(0, 99),
            max_size=3,
        ),
        "timeouts": timeouts(),
        "checkpoint": checkpoints(),
        "outbid": st.sampled_from(
            [
                "give_up",
                "raise",
                "cheapest_expected",
                {"action": "wait", "wait_s": 60},
                {"action": "cheapest_expected", "wait_s": 1800, "time_value_dph": 0.5},
            ]
        ),
        "max_cost_usd": st.none() | st.floats(0.0, 1e6),
        "disk_gb": st.none() | st.floats(8.0, 500.0),
        "max_attempts": st.integers(1, 50),
        "restarts_on_error": st.integers(0, 5),
        "max_offers": st.integers(1, 10),
        "project": st.none() | _words,
        "team": st.none() | _words,
        "image": st.none() | st.just("pytorch/pytorch:latest"),
        "storage_options": st.just({"auto_mkdir": True}),
        "outputs": st.lists(st.sampled_from(["model.pt", "logs/", "out/*.json"]), max_size=2),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            doc[key] = draw(strategy)
    return doc


# -- mutations --------------------------------------------------------------------------------

_scalar_garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.just(10**400),
    st.just(-(10**400)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -5.0, -1, 0, 0.0, 1e308, -1e308]),
    st.text(max_size=20),
    st.sampled_from(["soon", "maybe", "", " ", "big", "auto", "NaN", "-5", "1e400", "\x00x"]),
)
_garbage = st.recursive(
    _scalar_garbage,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.integers(-3, 3), inner, max_size=3)
    ),
    max_leaves=8,
)

_SECTIONS = ("timeouts", "checkpoint", "outbid", "profile", "env", "storage_options")
_SECTION_KEYS = {
    "timeouts": [a.name for a in attrs.fields(type(FAST))],
    "checkpoint": [
        "every_steps",
        "every_seconds",
        "keep_last",
        "keep_best",
        "best_metric",
        "best_mode",
        "async_save",
        "mtbf_seconds",
        "url_suffix",
    ],
    "outbid": [
        "action",
        "step",
        "max_bid",
        "wait_s",
        "time_value_dph",
        "prior_hold_s",
        "prior_mtbp_s",
    ],
    "profile": ["gpu_name", "max_dph", "disk_gb", "rental", "max_duration_hours", "num_gpus"],
    "env": ["SEED", "TOKEN"],
    "storage_options": ["anon", "key"],
}
_TOP_KEYS = [a.name for a in attrs.fields(Job)]


@st.composite
def mutate(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """One to three damages: a garbage value, an unknown key, a missing key."""
    doc = json.loads(json.dumps(doc))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["top", "top", "nested", "nested", "unknown", "missing"]))
        if kind == "top":
            doc[draw(st.sampled_from(_TOP_KEYS))] = draw(_garbage)
        elif kind == "nested":
            section = draw(st.sampled_from(_SECTIONS))
            body = doc.get(section)
            if not isinstance(body, dict):
                body = {}
            body[draw(st.sampled_from(_SECTION_KEYS[section]))] = draw(_garbage)
            doc[section] = body
        elif kind == "unknown":
            section = draw(st.sampled_from([None, *_SECTIONS[:3]]))
            target = doc if section is None else doc.setdefault(section, {})
            if isinstance(target, dict):
                target[draw(_words)] = draw(_garbage)
        elif doc:
            doc.pop(draw(st.sampled_from(sorted(doc))), None)
    return doc


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, str]:
    """``(kind, YAML text)``: valid, mutated, mutated then cut or garbled as text, or junk."""
    doc = draw(valid_documents())
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "mutated", "text", "garbage"]))
    if kind == "valid":
        return kind, dump(doc)
    if kind == "garbage":  # not a job at all: a list, a number, nested junk
        return kind, dump(draw(_garbage))
    doc = draw(mutate(doc))
    text = dump(doc)
    if kind == "text":
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", ": :", "\t", "&a [*a", "{", "- x\n  y: 1"]))
    return kind, text


# -- the tripwire client ----------------------------------------------------------------------


class Tripwire(httpx.BaseTransport):
    """Counts requests and answers each with Vast's 401, so a run stops at its first call."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return httpx.Response(
            401, json={"success": False, "error": "auth_error", "msg": "Invalid user key"}
        )


@pytest.fixture(scope="module")
def fuzz_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A ledger, with the working directory in a temporary folder: a mutated ``store_url``
    (``m``, ``memor{``) is a local folder, and its run directory must not land in the repo."""
    folder = tmp_path_factory.mktemp("job-fuzz")
    here = os.getcwd()
    os.chdir(folder)
    try:
        with Ledger(folder / "ledger.db", clock=ManualClock()) as ledger:
            yield ledger
    finally:
        os.chdir(here)
    fs = fsspec.filesystem("memory")
    if fs.exists(STORE):
        fs.rm(STORE, recursive=True)


def run_through(text: str, ledger: Ledger) -> tuple[str, Tripwire]:
    """Load ``text`` and run it against the tripwire; return the outcome and the transport."""
    tripwire = Tripwire()
    try:
        job = Job.from_yaml(text)
    except VastkitError as exc:
        return f"rejected at load: {type(exc).__name__}", tripwire
    clock = ManualClock()
    with (
        httpx.Client(transport=tripwire) as http,
        Client("fuzz-key", base_url="https://vast.test", clock=clock, http_client=http) as client,
    ):
        try:
            run_job(
                job, client=client, ledger=ledger, clock=clock, profiles=PROFILES, progress=False
            )
        except VastkitError as exc:
            where = "after the API was reached" if tripwire.requests else "before any API call"
            return f"accepted, stopped {where}: {type(exc).__name__}", tripwire
    return "accepted, ran", tripwire


@settings(
    max_examples=FUZZ_EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=documents())
def test_a_job_file_is_refused_before_any_api_call_or_accepted(
    document: tuple[str, str], fuzz_ledger: Ledger
) -> None:
    kind, text = document

    outcome, tripwire = run_through(text, fuzz_ledger)  # any other exception fails the test

    event(f"{kind}: {outcome}")
    if outcome.startswith("rejected at load") or "before any API call" in outcome:
        assert tripwire.requests == []
    if kind == "valid":
        assert not outcome.startswith("rejected"), text


def test_the_tripwire_sees_the_first_call_of_a_valid_job(fuzz_ledger: Ledger) -> None:
    """The property above is not vacuous: a valid job reaches the API, a bad one does not."""
    good = dump(
        {"name": "ok", "command": "python a.py", "profile": "test-4090", "store_url": STORE}
    )
    outcome, tripwire = run_through(good, fuzz_ledger)
    assert outcome == "accepted, stopped after the API was reached: AuthenticationError"
    assert tripwire.requests
    outcome, tripwire = run_through(good + "disk_gb: .nan\n", fuzz_ledger)
    assert outcome == "rejected at load: ConfigError"
    assert tripwire.requests == []
    outcome, tripwire = run_through(good.replace("test-4090", "no-such-profile"), fuzz_ledger)
    assert outcome == "accepted, stopped before any API call: ConfigError"
    assert tripwire.requests == []


# -- a sample runs to the end -----------------------------------------------------------------


@settings(max_examples=RUN_EXAMPLES)
@given(doc=valid_documents())
def test_a_sample_of_valid_job_files_runs_on_the_emulator(doc: dict[str, Any]) -> None:
    doc = {**doc, "timeouts": {k: v for k, v in attrs.asdict(FAST).items() if v is not None}}
    doc["store_url"] = f"memory://job-fuzz-run-{uuid.uuid4().hex[:8]}"
    doc.update({"max_attempts": 50, "max_cost_usd": None, "outbid": "give_up"})
    doc.pop("disk_gb", None)  # the emulator's seed-0 catalog has no 500 GB offer in budget
    if not isinstance(doc["profile"], str):  # an inline profile may price every offer out
        doc["profile"] = "test-4090"
    job = Job.from_yaml(dump(doc))
    clock = HookedClock()
    with serve(
        seed=0,
        clock=clock,
        offers=300,
        rate_limits=False,
        timings=Timings(provision_s=10, loading_s=30),
    ) as emu:
        clock.hook = FakeWorkers(emu=emu, store_url=job.store_url, total_steps=20)
        with (
            httpx.Client(transport=emu.transport) as http,
            Client(
                emu.api_key,
                base_url=emu.url,
                clock=clock,
                max_retries=2,
                min_intervals={},
                http_client=http,
            ) as client,
            tempfile.TemporaryDirectory(prefix="job-fuzz-") as folder,
            Ledger(Path(folder) / "ledger.db", clock=clock) as ledger,
        ):
            result = run_job(
                job, client=client, ledger=ledger, clock=clock, profiles=PROFILES, progress=False
            )
    event(f"ran: {result.status}")
    assert result.status == "succeeded", result.summary()
