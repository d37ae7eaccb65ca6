"""The :class:`Emulator` handle: build, serve, inspect and steer a local Vast marketplace."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Literal

import httpx

from vastkit.clock import Clock, ManualClock, SystemClock
from vastkit.emulator._app import App
from vastkit.emulator._faults import FAULT_KINDS, ROUTE_PAGES, FaultRule
from vastkit.emulator._limits import DEFAULT_RATE_LIMITS
from vastkit.emulator._model import Timings
from vastkit.emulator._offer_columns import render_offer
from vastkit.emulator._render import charges, render_instance
from vastkit.emulator._runners import Runner, ScriptedRunner, make_runner
from vastkit.emulator._server import EmulatorTransport, LoopbackServer
from vastkit.emulator._state import State
from vastkit.emulator._time import AcceleratedClock, Ticker
from vastkit.emulator._views import InstanceView, UserView, instance_view

__all__ = ["Emulator", "serve"]

logger = logging.getLogger("vastkit.emulator")

IN_PROCESS_URL = "http://vast.emulator"
"""The base URL to use with :attr:`Emulator.transport` when no server runs."""


class Emulator:
    """A local Vast.ai marketplace that speaks the real REST API.

    Use it in-process through :attr:`transport`, or over loopback HTTP with :meth:`serve` (or
    the module-level :func:`vastkit.emulator.serve`). State changes follow the emulator's clock:
    every request first brings the world up to ``clock.now()``; with a
    :class:`~vastkit.clock.ManualClock`, advance the clock and call :meth:`tick` (or make any
    request).

    Args:
        seed: Seeds the catalog and every random choice.
        offers: Catalog size, 1 to 50,000 (one offer per machine).
        clock: The clock (default: real time, or :class:`AcceleratedClock` when ``speed``).
        speed: Run real time ``speed`` times faster (ignored when ``clock`` is given).
        runner: ``"scripted"`` (no processes), ``"process"`` (onstart runs with bash), or a
            runner object.
        timings: Phase delays.
        credit: The account's starting credit in $.
        api_key: The account key (default: derived from the seed).
        rate_limits: True for the documented per-endpoint minimum intervals, False to turn
            every limit off, or a mapping endpoint -> seconds merged over the defaults (0 turns
            one off). Endpoint names: search, create, list, show, manage, destroy, bid_price,
            reboot, recycle, request_logs, command, user, charges (and the *_bulk ones).
        rate_limit_body: Force one 429 body shape everywhere: ``detail``, ``error``, ``text``.
        retry_after: Send ``Retry-After`` on 429 (the live API does not).
        search_quota: Searches allowed per UTC day (None: unlimited).
        default_search_limit: Offers returned when a search sends no ``limit``.
        preemption_mtbp_s: Mean time between random preemptions of a running bid instance.
        preemption_hold_s: Mean time a random competitor keeps the machine.
        auto_resume: Outbid instances resume by themselves when priority returns.
        reissue_offer_ids: A machine coming back on the market gets a new offer id.
        stuck_loading_probability: Chance that a new instance never leaves ``loading``.
        oci_error_probability: Chance that a new instance ends ``created`` with an OCI error.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        offers: int = 2000,
        clock: Clock | None = None,
        speed: float | None = None,
        runner: Literal["scripted", "process"] | Runner = "scripted",
        timings: Timings | None = None,
        credit: float = 100.0,
        api_key: str | None = None,
        rate_limits: bool | Mapping[str, float] = True,
        rate_limit_body: Literal["detail", "error", "text"] | None = None,
        retry_after: bool = False,
        search_quota: int | None = None,
        default_search_limit: int = 64,
        preemption_mtbp_s: float | None = None,
        preemption_hold_s: float = 600.0,
        auto_resume: bool = True,
        reissue_offer_ids: bool = True,
        stuck_loading_probability: float = 0.0,
        oci_error_probability: float = 0.0,
    ) -> None:
        if clock is None:
            clock = AcceleratedClock(speed) if speed else SystemClock()
        self.clock: Clock = clock
        """The emulator's clock."""
        runner_obj = make_runner(runner)
        self.runner: Runner = runner_obj
        """What runs inside instances."""
        if preemption_mtbp_s is not None and preemption_mtbp_s <= 0:
            raise ValueError("preemption_mtbp_s must be positive")
        self._state = State(
            seed=seed,
            offers=offers,
            now=clock.now(),
            runner=runner_obj,
            timings=timings or Timings(),
            credit=credit,
            auto_resume=auto_resume,
            preemption_mtbp_s=preemption_mtbp_s,
            preemption_hold_s=preemption_hold_s,
            reissue_offer_ids=reissue_offer_ids,
        )
        self._state.stuck_loading_probability = stuck_loading_probability
        self._state.oci_error_probability = oci_error_probability
        self.api_key: str = api_key or self._state.new_key()
        """The account's API key (give it as ``Authorization: Bearer``)."""
        limits, search_limited = _endpoint_limits(rate_limits)
        self._app = App(
            self._state,
            clock.now,
            api_key=self.api_key,
            rate_limits=limits,
            search_limited=search_limited,
            rate_limit_body=rate_limit_body,
            retry_after=retry_after,
            search_quota=search_quota,
            default_search_limit=default_search_limit,
        )
        self._server: LoopbackServer | None = None
        self._ticker: Ticker | None = None
        self._closed = False
        self._state.containers.url = lambda: self._server.url if self._server else None

    def __repr__(self) -> str:
        where = self._server.url if self._server else "in-process"
        return f"Emulator(seed={self._state.seed}, offers={len(self._state.machines)}, {where})"

    # ------------------------------------------------------------------ serving

    @property
    def url(self) -> str:
        """The server's base URL, or ``http://vast.emulator`` (for :attr:`transport`) if none."""
        return self._server.url if self._server else IN_PROCESS_URL

    @property
    def transport(self) -> httpx.BaseTransport:
        """An in-process httpx transport with the same behaviour as the server."""
        return EmulatorTransport(self._app)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An :class:`httpx.Client` on the in-process transport, authenticated as the account."""
        headers = {"Authorization": f"Bearer {self.api_key}", **kwargs.pop("headers", {})}
        return httpx.Client(
            base_url=IN_PROCESS_URL, transport=self.transport, headers=headers, **kwargs
        )

    def serve(self, host: str = "127.0.0.1", port: int = 0, *, tick_s: float = 0.1) -> Emulator:
        """Serve the API over HTTP on ``host:port`` (0: a free port) from a thread.

        A ticker thread also advances the world every ``tick_s`` real seconds unless the
        clock is a :class:`~vastkit.clock.ManualClock`.

        Returns:
            The emulator itself.

        Raises:
            RuntimeError: It is already serving or closed.
        """
        if self._closed:
            raise RuntimeError("the emulator is closed")
        if self._server is not None:
            raise RuntimeError(f"already serving on {self._server.url}")
        self._server = LoopbackServer(self._app, host, port)
        self._server.start()
        if not isinstance(self.clock, ManualClock):
            self._ticker = Ticker(self.tick, tick_s)
            self._ticker.start()
        logger.info("Vast emulator serving on %s", self._server.url)
        return self

    def close(self) -> None:
        """Stop serving, kill every container process, remove their files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.stop()
        if self._server is not None:
            self._server.stop()
        with self._state.lock:
            self.runner.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Bring the world up to the clock's time (phases, preemptions, billing)."""
        with self._state.lock:
            self._state.advance_to(self.clock.now())

    # ------------------------------------------------------------------ inspect

    @property
    def instances(self) -> list[InstanceView]:
        """Snapshots of the live instances, by id."""
        self.tick()
        with self._state.lock:
            return [instance_view(i) for _, i in sorted(self._state.instances.items())]

    def instance(self, instance_id: int) -> InstanceView:
        """A snapshot of a live instance.

        Raises:
            KeyError: No such live instance.
        """
        self.tick()
        with self._state.lock:
            return instance_view(self._state.instances[instance_id])

    def instance_json(self, instance_id: int) -> dict[str, Any]:
        """The instance object the API would answer."""
        self.tick()
        with self._state.lock:
            return render_instance(self._state, self._state.instances[instance_id])

    @property
    def user(self) -> UserView:
        """The account's credit and total spend."""
        self.tick()
        with self._state.lock:
            account = self._state.account
            return UserView(credit=account.credit, total_spend=account.total_spend)

    @property
    def events(self) -> list[tuple[float, str, int]]:
        """``(time, kind, instance id)`` of notable changes, such as ``client:outbid``."""
        with self._state.lock:
            return list(self._state.events)

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, endpoint, status)`` of every request answered."""
        with self._state.lock:
            return list(self._app.requests)

    def search(self, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run an offer query directly (no authentication, rate limits or faults)."""
        self.tick()
        with self._state.lock:
            return self._app.offers.find(dict(query or {}))

    def offer(
        self, offer_id: int, *, kind: str = "on-demand", storage: float = 8.0
    ) -> dict[str, Any]:
        """The offer object for ``offer_id`` as a search would show it.

        Raises:
            KeyError: No such current offer id.
        """
        with self._state.lock:
            machine = self._state.catalog.by_ask_id[offer_id]
            return render_offer(self._state, machine, kind, storage)

    def logs(self, instance_id: int) -> str:
        """What the instance's container printed so far."""
        with self._state.lock:
            return self.runner.logs(instance_id)

    def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """The charges the API would list for ``[start, end]``."""
        self.tick()
        with self._state.lock:
            return charges(self._state, start, end)

    # ------------------------------------------------------------------ steer

    def _machine_of(self, instance_id: int) -> int:
        return self._state.instances[instance_id].machine.id

    def preempt(
        self, instance_id: int, *, price: float | None = None, duration: float | None = None
    ) -> int:
        """Make a competitor outbid a bid instance now.

        Args:
            instance_id: A live interruptible instance.
            price: The competitor's bid (default 25% above the instance's); None with an
                on-demand instance is not allowed.
            duration: Seconds the competitor keeps the machine (None: until removed).

        Returns:
            The competitor's id (for :meth:`remove_competitor`).

        Raises:
            KeyError: No such instance.
            ValueError: The instance is on-demand (it cannot be outbid).
        """
        self.tick()
        with self._state.lock:
            inst = self._state.instances[instance_id]
            if not inst.is_bid:
                raise ValueError(f"instance {instance_id} is on-demand: it cannot be outbid")
            bid = round(inst.price * 1.25 + 0.001, 4) if price is None else price
            comp = self._state.add_competitor(inst.machine.id, price=bid, duration=duration)
            return comp.id

    def add_competitor(
        self,
        machine_id: int,
        *,
        price: float | None = None,
        start: float | None = None,
        duration: float | None = None,
    ) -> int:
        """Script another renter on a machine.

        Args:
            machine_id: The machine.
            price: Its bid in $/h, or None for an on-demand rental (beats every bid).
            start: When it arrives (clock time; default now).
            duration: How long it stays, in seconds (None: until removed).

        Returns:
            The competitor's id.
        """
        self.tick()
        with self._state.lock:
            return self._state.add_competitor(
                machine_id, price=price, start=start, duration=duration
            ).id

    def remove_competitor(self, competitor_id: int) -> None:
        """A competitor leaves; outbid instances on its machine may resume."""
        self.tick()
        with self._state.lock:
            self._state.remove_competitor(competitor_id)

    def set_host_status(
        self,
        status: Literal["online", "offline", "unknown"],
        *,
        machine_id: int | None = None,
        instance_id: int | None = None,
    ) -> None:
        """Take a host offline, make it unknown (no heartbeat), or bring it back.

        With the process runner, ``offline`` freezes the instance's processes (SIGSTOP) and
        ``online`` thaws them (SIGCONT).
        """
        self.tick()
        with self._state.lock:
            if machine_id is None:
                if instance_id is None:
                    raise ValueError("give machine_id or instance_id")
                machine_id = self._machine_of(instance_id)
            self._state.set_host_status(self._state.catalog.by_machine_id[machine_id], status)

    def inject(
        self,
        kind: Literal[
            "status",
            "drop",
            "slow",
            "malformed",
            "rate_limit",
            "search_quota",
            "missing_route",
            "offer_gone",
        ],
        endpoint: str = "*",
        *,
        count: int | None = 1,
        probability: float | None = None,
        status: int = 503,
        delay_s: float = 2.0,
        processed: bool = False,
        shape: Literal["detail", "error", "text"] = "detail",
        page: Literal["html", "no_such_endpoint", "deprecated", "empty"] = "html",
    ) -> FaultRule:
        """Program a fault on an endpoint (or ``"*"``).

        Args:
            kind: ``status`` (answer ``status``: 500 as JSON, 502/503/504 as an HTML page),
                ``drop`` (close the connection without an answer), ``slow`` (answer after
                ``delay_s`` real seconds), ``malformed`` (truncated JSON), ``rate_limit`` (a
                429 with body ``shape``), ``search_quota`` (the daily quota 429),
                ``missing_route`` (the route has moved or been retired: answer ``page``
                without reaching the handler, so nothing changes), ``offer_gone`` (Vast's
                ``no_such_ask`` answer to a create, as when another renter took the offer
                first: 404 ``invalid_args`` for ``status=404``, 410 ``no_such_ask`` for 410).
            endpoint: An endpoint name (see the class docstring) or ``"*"``.
            count: How many requests it hits (None: every matching one).
            probability: Hit each matching request with this chance, drawn from the seed.
            status: The status code for ``status`` and ``offer_gone``.
            delay_s: The delay for ``slow``.
            processed: For ``status``/``drop``: handle the request first (the state changes),
                then fail the answer, as when a create succeeds but its answer is lost.
            shape: The 429 body for ``rate_limit``.
            page: The answer for ``missing_route``: ``html`` (a proxy's 404 page),
                ``no_such_endpoint`` (404 ``not_found`` "No such endpoint: <path>", the API's
                answer for a path it does not know), ``deprecated`` (410
                ``deprecated_endpoint``) or ``empty`` (a 404 without a body).

        Returns:
            The rule (its ``fired`` counts hits).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if page not in ROUTE_PAGES:
            raise ValueError(f"unknown missing_route page {page!r}")
        rule = FaultRule(
            kind=kind,
            endpoint=endpoint,
            count=count,
            probability=probability,
            status=status,
            delay_s=delay_s,
            processed=processed,
            shape=shape,
            page=page,
        )
        with self._state.lock:
            self._app.faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        """Remove every programmed request fault."""
        with self._state.lock:
            self._app.faults.clear()

    def fail_next_instances(
        self, kind: Literal["stuck_loading", "oci_error"], count: int = 1
    ) -> None:
        """Make the next ``count`` created instances never reach running.

        ``stuck_loading`` stays in ``loading``; ``oci_error`` ends ``created`` with an
        ``OCI runtime create failed`` ``status_msg``.
        """
        if kind not in ("stuck_loading", "oci_error"):
            raise ValueError(f"unknown instance fault {kind!r}")
        with self._state.lock:
            self._state.instance_faults.extend([kind] * count)

    def add_traffic(self, instance_id: int, *, up_gb: float = 0.0, down_gb: float = 0.0) -> None:
        """Bill upload/download traffic to an instance now."""
        self.tick()
        with self._state.lock:
            self._state.add_traffic(self._state.instances[instance_id], up_gb, down_gb)

    def set_credit(self, credit: float) -> None:
        """Set the account's credit in $."""
        self.tick()
        with self._state.lock:
            self._state.account.credit = float(credit)

    def finish(self, instance_id: int, code: int = 0) -> None:
        """Scripted runner: make the instance's container's main process end with ``code``."""
        if not isinstance(self.runner, ScriptedRunner):
            raise TypeError("finish() needs the scripted runner")
        with self._state.lock:
            self.runner.finish(instance_id, code)
        self.tick()

    def write_log(self, instance_id: int, text: str) -> None:
        """Scripted runner: append to an instance's log."""
        if not isinstance(self.runner, ScriptedRunner):
            raise TypeError("write_log() needs the scripted runner")
        with self._state.lock:
            self.runner.write_log(instance_id, text)


def _endpoint_limits(rate_limits: bool | Mapping[str, float]) -> tuple[dict[str, float], bool]:
    """The per-endpoint intervals, and whether offer search has its 10-per-minute window."""
    if rate_limits is False:
        return {}, False
    limits = dict(DEFAULT_RATE_LIMITS)
    if rate_limits is not True:
        limits.update(rate_limits)
    return limits, bool(limits.pop("search", 1.0))


@contextlib.contextmanager
def serve(
    seed: int = 0, *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> Iterator[Emulator]:
    """Run an emulator on loopback HTTP for the ``with`` block.

    Args:
        seed: Seeds the catalog and every random choice.
        host: The address to bind.
        port: The port (0: a free one).
        **options: Any :class:`Emulator` keyword argument.

    Yields:
        The serving emulator (``emu.url``, ``emu.api_key``, ``emu.transport``, ...).
    """
    emulator = Emulator(seed, **options)
    try:
        emulator.serve(host, port)
        yield emulator
    finally:
        emulator.close()
