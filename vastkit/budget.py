"""Budgets from ``budgets.yaml``, and the guard that enforces them.

Budgets are per job, per project and per team, each with an optional period. The guard checks the
worst case of a launch before any money is spent (:meth:`BudgetGuard.preflight`) and the spend so
far on every poll (:meth:`BudgetGuard.check`), early enough that spend never passes a cap by more
than one poll interval of the running rate. The arithmetic of what a rental costs lives in
:mod:`vastkit.money`. This module is pure policy (layer 2): it reads ``budgets.yaml`` when asked and
learns what has been spent from a :class:`SpendSource` (the ledger is one) passed in.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import logging
import math
import os
from collections.abc import Mapping
from typing import Any, Literal, Protocol, cast

import attrs

from vastkit._yaml import (
    ConfigTypeError,
    ConfigValueError,
    Document,
    did_you_mean,
    load_document,
    read_source,
)
from vastkit.clock import Clock, SystemClock
from vastkit.errors import BudgetExceededError, ConfigError
from vastkit.money import worst_case_usd
from vastkit.profiles import GpuProfile

__all__ = [
    "Budget",
    "BudgetAction",
    "BudgetDecision",
    "BudgetGuard",
    "Budgets",
    "Preflight",
    "SpendSource",
    "load_budgets",
]

logger = logging.getLogger("vastkit.budget")

Period = Literal["total", "monthly", "daily"]
_PERIODS: tuple[str, ...] = ("total", "monthly", "daily")
DEFAULT_WARN_AT: tuple[float, ...] = (0.5, 0.8, 0.95)
_SCOPES: tuple[str, ...] = ("team", "project", "job")
_MAX_INT = 2**63


def _amount(key: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a finite float, 0 or more (more than 0 if ``positive``), else a typed error."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigTypeError(key, f"{key} must be a number (got {value!r:.60})")
    if isinstance(value, int) and abs(value) >= _MAX_INT:
        raise ConfigValueError(key, f"{key} is out of range (got {value!r:.60})")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "positive" if positive else "0 or more"
        raise ConfigValueError(key, f"{key} must be {bound} (got {value!r})")
    return float(value)


# --- budgets.yaml ------------------------------------------------------------------------------


def _period_start(period: Period, now: float) -> float | None:
    if period == "total":
        return None
    day = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    if period == "daily":
        start = day.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


def _period_end(period: Period, now: float) -> float | None:
    start = _period_start(period, now)
    if start is None:
        return None
    day = dt.datetime.fromtimestamp(start, tz=dt.UTC)
    if period == "daily":
        return start + 86400.0
    days = calendar.monthrange(day.year, day.month)[1]
    return start + days * 86400.0


@attrs.frozen(kw_only=True)
class Budget:
    """One spending limit.

    Attributes:
        scope: ``"team"``, ``"project"`` or ``"job"``.
        name: The team or project name (``"*"`` for the per-job limit).
        limit_usd: The cap in dollars.
        period: ``total`` (all time), ``monthly`` or ``daily`` (calendar periods in UTC).
        warn_at: Fractions of the limit at which to warn, ascending.
        team: For a project, the team it belongs to (runs of the project count to it).
    """

    scope: Literal["team", "project", "job"]
    name: str
    limit_usd: float
    period: Period = "total"
    warn_at: tuple[float, ...] = DEFAULT_WARN_AT
    team: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.scope not in _SCOPES:
            raise ConfigValueError(
                "scope", f"scope must be one of {', '.join(_SCOPES)} (got {self.scope!r:.60})"
            )
        if not isinstance(self.name, str) or not self.name:
            raise ConfigTypeError("name", f"name must be non-empty text (got {self.name!r:.60})")
        _amount("limit_usd", self.limit_usd)
        if self.period not in _PERIODS:
            raise ConfigValueError(
                "period", f"period must be one of {', '.join(_PERIODS)} (got {self.period!r:.60})"
            )
        if not isinstance(self.warn_at, tuple) or any(
            isinstance(w, bool) or not isinstance(w, int | float) for w in self.warn_at
        ):
            raise ConfigTypeError(
                "warn_at", f"warn_at must be a tuple of numbers (got {self.warn_at!r:.60})"
            )
        if any(not 0 < w <= 1 for w in self.warn_at) or list(self.warn_at) != sorted(self.warn_at):
            raise ConfigValueError(
                "warn_at", f"warn_at must be ascending fractions in (0, 1] (got {self.warn_at})"
            )
        if self.team is not None and (not isinstance(self.team, str) or not self.team):
            raise ConfigTypeError("team", f"team must be a team name (got {self.team!r:.60})")

    @property
    def label(self) -> str:
        """``"team:ml"``, ``"project:vision"``, ``"job:<run id>"``."""
        return f"{self.scope}:{self.name}"

    def period_start(self, now: float) -> float | None:
        """Start of the current period (Unix seconds), or None for ``total``."""
        return _period_start(self.period, now)

    def period_end(self, now: float) -> float | None:
        """End of the current period (Unix seconds), or None for ``total``."""
        return _period_end(self.period, now)


@attrs.frozen(kw_only=True)
class Budgets:
    """Every limit from one ``budgets.yaml``.

    Attributes:
        teams: Team budgets by name.
        projects: Project budgets by name.
        job: The limit for any single job (period ``total``), if set.
        path: Where they were loaded from, for messages.
    """

    teams: Mapping[str, Budget] = attrs.field(factory=dict)
    projects: Mapping[str, Budget] = attrs.field(factory=dict)
    job: Budget | None = None
    path: str | None = None

    def applicable(
        self, *, project: str | None = None, team: str | None = None
    ) -> tuple[Budget, ...]:
        """The limits that apply to a job of ``project`` (and ``team``): job, project, team.

        A project's ``team`` in the file is used when ``team`` is not given.

        Raises:
            ConfigError: ``project`` or ``team`` has no budget while budgets for others exist
                (a typo would otherwise mean "no limit"). The message lists the known names.
        """
        result: list[Budget] = []
        if self.job is not None:
            result.append(self.job)
        if project is not None:
            if project in self.projects:
                budget = self.projects[project]
                result.append(budget)
                team = team or budget.team
            elif self.projects:
                raise ConfigError(
                    f"no budget for project '{project}'; known projects: "
                    f"{', '.join(self.projects)}{did_you_mean(project, self.projects)}",
                    path=self.path,
                    key="projects",
                )
        if team is not None:
            if team in self.teams:
                result.append(self.teams[team])
            elif self.teams:
                raise ConfigError(
                    f"no budget for team '{team}'; known teams: "
                    f"{', '.join(self.teams)}{did_you_mean(team, self.teams)}",
                    path=self.path,
                    key="teams",
                )
        return tuple(result)


_BUDGET_KEYS = ("limit_usd", "period", "warn_at")
_PROJECT_KEYS = (*_BUDGET_KEYS, "team")
_TOP_KEYS = ("teams", "projects", "job", "warn_at")


def _warn_list(doc: Document, value: Any, *path: str) -> tuple[float, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 < item <= 1:
            raise doc.error(
                f"warn_at must be fractions of the limit between 0 and 1, like [0.5, 0.8] "
                f"(got {item!r:.60})",
                *path,
            )
        out.append(float(item))
    return tuple(sorted(set(out)))


def _budget(
    doc: Document,
    scope: Literal["team", "project", "job"],
    name: str,
    body: Any,
    default_warn: tuple[float, ...],
    *path: str,
) -> Budget:
    what = "the job budget" if scope == "job" else f"{scope} '{name}'"
    if not isinstance(body, Mapping):
        raise doc.error(f"{what} must be a mapping with limit_usd (and period, warn_at)", *path)
    allowed = _PROJECT_KEYS if scope == "project" else _BUDGET_KEYS
    for key in body:
        if key not in allowed:
            raise doc.error(
                f"unknown key '{key}' in {what}{did_you_mean(str(key), allowed)}", *path, key
            )
    if "limit_usd" not in body:
        raise doc.error(f"{what} is missing required key 'limit_usd'", *path)
    limit = body["limit_usd"]
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int | float)
        or (isinstance(limit, int) and abs(limit) >= _MAX_INT)
        or not math.isfinite(limit)
    ):
        message = f"{what}: limit_usd must be a finite number of dollars (got {limit!r:.60})"
        raise doc.error(message, *path, "limit_usd")
    if limit < 0:
        raise doc.error(f"{what}: limit_usd must be 0 or more (got {limit:g})", *path, "limit_usd")
    period = body.get("period", "total")
    if (
        not isinstance(period, str)
        or period not in _PERIODS
        or (scope == "job" and period != "total")
    ):
        allowed_periods = ("total",) if scope == "job" else _PERIODS
        raise doc.error(
            f"{what}: period must be {' or '.join(allowed_periods)} (got {period!r:.60})"
            f"{did_you_mean(str(period), allowed_periods)}",
            *path,
            "period",
        )
    warn = _warn_list(doc, body["warn_at"], *path, "warn_at") if "warn_at" in body else default_warn
    team = body.get("team")
    if team is not None and (not isinstance(team, str) or not team.strip()):
        raise doc.error(f"{what}: team must be a team name (got {team!r:.60})", *path, "team")
    return Budget(
        scope=scope,
        name=name,
        limit_usd=float(limit),
        period=cast(Period, period),
        warn_at=warn,
        team=team,
    )


def load_budgets(
    source: str | os.PathLike[str] | Mapping[str, Any] | Document,
) -> Budgets:
    """Load budgets from a ``budgets.yaml`` file, YAML text or a mapping.

    The format::

        warn_at: [0.5, 0.8, 0.95]      # default thresholds (fractions of each limit)
        teams:
          ml-research: {limit_usd: 2000, period: monthly}
        projects:
          vision: {limit_usd: 500, period: monthly, team: ml-research, warn_at: [0.9]}
        job:
          limit_usd: 50                # any single job

    Args:
        source: A path, YAML text, an already-parsed mapping, or a loaded
            :class:`~vastkit._yaml.Document` (or a ``sub`` view of one: errors then name its
            file and lines).

    Returns:
        The budgets.

    Raises:
        ConfigError: The file is missing, not YAML, or wrong; the message names the file, the line
            and the key, and suggests the nearest valid key for a typo.
    """
    if isinstance(source, Document):
        doc = source
    elif isinstance(source, Mapping):
        doc = Document(data=source, path="<dict>")
    else:
        text, name = read_source(source, what="budgets")
        doc = load_document(text, name)
    data = doc.data
    if data is None:
        return Budgets(path=doc.path)
    if not isinstance(data, Mapping):
        raise doc.error("budgets must be a mapping with 'teams', 'projects' and/or 'job'")
    for key in data:
        if key not in _TOP_KEYS:
            raise doc.error(
                f"unknown top-level key '{key}'{did_you_mean(str(key), _TOP_KEYS)}", key
            )
    default_warn = (
        _warn_list(doc, data["warn_at"], "warn_at") if "warn_at" in data else DEFAULT_WARN_AT
    )
    sections: dict[str, dict[str, Budget]] = {"teams": {}, "projects": {}}
    scopes: dict[str, Literal["team", "project"]] = {"teams": "team", "projects": "project"}
    for section, scope in scopes.items():
        body = data.get(section) or {}
        if not isinstance(body, Mapping):
            raise doc.error(f"'{section}' must map {scope} names to budgets", section)
        for name, entry in body.items():
            sections[section][str(name)] = _budget(
                doc, scope, str(name), entry, default_warn, section, str(name)
            )
    for name, project in sections["projects"].items():
        if project.team is not None and sections["teams"] and project.team not in sections["teams"]:
            raise doc.error(
                f"project '{name}' belongs to team '{project.team}', which has no budget; "
                f"known teams: {', '.join(sections['teams'])}"
                f"{did_you_mean(project.team, sections['teams'])}",
                "projects",
                name,
                "team",
            )
    job = _budget(doc, "job", "*", data["job"], default_warn, "job") if "job" in data else None
    return Budgets(teams=sections["teams"], projects=sections["projects"], job=job, path=doc.path)


# --- the guard ---------------------------------------------------------------------------------


class SpendSource(Protocol):
    """Anything that can say how much has been spent (:class:`vastkit.ledger.Ledger` can)."""

    def spend(
        self,
        *,
        project: str | None = None,
        team: str | None = None,
        run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> float:
        """Dollars spent by runs matching every given filter, in ``[since, until)``."""
        ...


class BudgetAction(enum.StrEnum):
    """What a runtime budget check tells the caller to do."""

    CONTINUE = "continue"
    """Carry on."""
    WARN = "warn"
    """Carry on, but a warning threshold was crossed since the last check."""
    STOP = "stop"
    """Save if possible and destroy now: the next poll could pass the cap."""


@attrs.frozen(kw_only=True)
class BudgetDecision:
    """The answer of :meth:`BudgetGuard.check`.

    Attributes:
        action: continue, warn or stop.
        message: One line for people.
        budget: The budget that decided (the tightest one), if any.
        spent_usd: What that budget's scope has spent in its period.
        remaining_usd: What it has left.
        crossed: ``(budget label, threshold)`` pairs crossed since the last check.
    """

    action: BudgetAction
    message: str
    budget: Budget | None = None
    spent_usd: float = 0.0
    remaining_usd: float = math.inf
    crossed: tuple[tuple[str, float], ...] = ()


@attrs.frozen(kw_only=True)
class Preflight:
    """The answer of a successful :meth:`BudgetGuard.preflight`.

    Attributes:
        worst_case_usd: The most the launch can cost.
        remaining_usd: What the tightest applicable budget has left (inf when none applies).
        budget: That budget, if any.
    """

    worst_case_usd: float
    remaining_usd: float
    budget: Budget | None = None


class BudgetGuard:
    """Enforces the budgets that apply to one job.

    Call :meth:`preflight` before every launch or relaunch, and :meth:`check` on every poll.

    Args:
        budgets: The limits (from :func:`load_budgets`); ``Budgets()`` for none.
        spend: Where spending is recorded (a :class:`~vastkit.ledger.Ledger`).
        project: The job's project, if any.
        team: The job's team, if any (default: the project's team in ``budgets``).
        run_id: The job's run id, for the per-job limit.
        job_limit_usd: A per-job cap in dollars that overrides ``budgets.job``.
        poll_interval_s: The time between runtime checks: :meth:`check` stops when the spend
            could pass a cap before the next one.
        clock: The clock (for budget periods).

    Raises:
        ConfigError: ``project`` or ``team`` has no budget while others do.
        ValueError: A negative or non-finite ``job_limit_usd``, or a ``poll_interval_s`` that
            is not a positive finite number (a ConfigError that is also a ValueError).
    """

    def __init__(
        self,
        budgets: Budgets,
        spend: SpendSource,
        *,
        project: str | None = None,
        team: str | None = None,
        run_id: str | None = None,
        job_limit_usd: float | None = None,
        poll_interval_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        poll_interval_s = _amount("poll_interval_s", poll_interval_s, positive=True)
        if job_limit_usd is not None:
            job_limit_usd = _amount("job_limit_usd", job_limit_usd)
        self._spend = spend
        self._clock: Clock = clock or SystemClock()
        self.project = project
        self.run_id = run_id
        self.poll_interval_s = float(poll_interval_s)
        applicable = list(budgets.applicable(project=project, team=team))
        if project is not None and project in budgets.projects:
            team = team or budgets.projects[project].team
        self.team = team
        job_warn = budgets.job.warn_at if budgets.job is not None else DEFAULT_WARN_AT
        applicable = [b for b in applicable if b.scope != "job" or job_limit_usd is None]
        if job_limit_usd is not None:
            applicable.insert(
                0, Budget(scope="job", name="*", limit_usd=job_limit_usd, warn_at=job_warn)
            )
        self.budgets: tuple[Budget, ...] = tuple(applicable)
        self._warned: set[tuple[str, float]] = set()

    def __repr__(self) -> str:
        return (
            f"BudgetGuard(project={self.project!r}, team={self.team!r}, run_id={self.run_id!r}, "
            f"budgets={[b.label for b in self.budgets]})"
        )

    def _label(self, budget: Budget) -> str:
        return f"job:{self.run_id}" if budget.scope == "job" and self.run_id else budget.label

    def spent(self, budget: Budget, now: float | None = None) -> float:
        """What ``budget``'s scope has spent in its current period.

        Args:
            budget: One of :attr:`budgets`.
            now: The time; default the clock's.

        Returns:
            Dollars.
        """
        now = self._clock.now() if now is None else now
        since = budget.period_start(now)
        if budget.scope == "job":
            if self.run_id is None:
                return 0.0
            return self._spend.spend(run_id=self.run_id, since=since)
        if budget.scope == "project":
            return self._spend.spend(project=budget.name, since=since)
        return self._spend.spend(team=budget.name, since=since)

    def others_running(self, budget: Budget, now: float) -> tuple[float, float]:
        """The spend not yet sampled, and the summed rate, of other runs in ``budget``'s scope.

        Every driver samples its running instances on each poll (in a shared ledger: on any
        machine), so this is at most one poll interval of their rates. Sources that cannot tell
        (no ``running`` method) count nothing.

        Returns:
            ``(dollars, $/h)``.
        """
        running = getattr(self._spend, "running", None)
        if running is None or budget.scope == "job":
            return 0.0, 0.0
        key = "project" if budget.scope == "project" else "team"
        accrued, rate = running(**{key: budget.name}, exclude_run=self.run_id, now=now)
        return float(accrued), float(rate)

    def remaining(self, now: float | None = None) -> tuple[float, Budget | None]:
        """What the tightest applicable budget has left, and that budget.

        Returns:
            ``(dollars, budget)``; ``(inf, None)`` when no budget applies.
        """
        now = self._clock.now() if now is None else now
        best: tuple[float, Budget | None] = (math.inf, None)
        for budget in self.budgets:
            left = budget.limit_usd - self.spent(budget, now)
            if left < best[0]:
                best = (left, budget)
        return best

    def preflight(
        self,
        profile: GpuProfile,
        *,
        storage_dph: float | None = None,
        overhead_hours: float = 1.0,
    ) -> Preflight:
        """Refuse a launch whose worst case cannot fit what remains of every budget.

        Args:
            profile: The profile to launch (its ``max_dph x max_duration_hours`` is the worst
                case while running).
            storage_dph: The chosen offer's storage rate, when known (see :func:`worst_case_usd`).
            overhead_hours: Storage-only hours to allow for.

        Returns:
            The worst case and what remains.

        Raises:
            BudgetExceededError: The worst case does not fit; the message says which budget, how
                much is left and how much the launch could cost.
        """
        worst = worst_case_usd(profile, storage_dph=storage_dph, overhead_hours=overhead_hours)
        now = self._clock.now()
        tightest: tuple[float, Budget | None] = (math.inf, None)
        for budget in self.budgets:
            spent = self.spent(budget, now)
            left = budget.limit_usd - spent
            if worst > left:
                raise BudgetExceededError(
                    f"{self._label(budget)} budget cannot cover profile '{profile.name}': "
                    f"worst case ${worst:.2f} ({profile.max_dph:g} $/h x "
                    f"{profile.max_duration_hours:g} h plus storage) but only ${max(left, 0):.2f} "
                    f"of ${budget.limit_usd:.2f} remains ({budget.period}); lower max_dph or "
                    "max_duration_hours, or raise the limit",
                    scope=self._label(budget),
                    limit_usd=budget.limit_usd,
                    spent_usd=spent,
                    needed_usd=worst,
                )
            if left < tightest[0]:
                tightest = (left, budget)
        return Preflight(worst_case_usd=worst, remaining_usd=tightest[0], budget=tightest[1])

    def check(self, rate_dph: float, *, unrecorded_usd: float = 0.0) -> BudgetDecision:
        """Decide, on a poll, whether the job may keep running.

        Stops as soon as ``spent + rate x poll_interval`` reaches a cap, so with polls at most
        ``poll_interval_s`` apart the spend never passes the cap; with a late poll it passes it
        by at most the running rate times the time since the previous poll.

        Args:
            rate_dph: What the job accrues now in $/h (:func:`hourly_rate` of its contract and
                state).
            unrecorded_usd: Spend accrued but not yet written to the spend source.

        Returns:
            continue, warn (a threshold was crossed since the last check) or stop.

        Raises:
            ValueError: A negative or non-finite rate or unrecorded amount (a ConfigError that
                is also a ValueError; a TypeError for a non-number).
        """
        rate_dph = _amount("rate_dph", rate_dph)
        unrecorded_usd = _amount("unrecorded_usd", unrecorded_usd)
        now = self._clock.now()
        lookahead = rate_dph * self.poll_interval_s / 3600.0
        crossed: list[tuple[str, float]] = []
        tightest: BudgetDecision | None = None
        for budget in self.budgets:
            others_usd, others_dph = self.others_running(budget, now)
            spent = self.spent(budget, now) + unrecorded_usd + others_usd
            left = budget.limit_usd - spent
            label = self._label(budget)
            ahead = lookahead + others_dph * self.poll_interval_s / 3600.0
            if spent + ahead >= budget.limit_usd and (spent > 0 or ahead > 0):
                rates = f"{rate_dph:.3f} $/h" + (
                    f" (and {others_dph:.3f} $/h of other running jobs)" if others_dph else ""
                )
                message = (
                    f"{label} budget: ${spent:.2f} of ${budget.limit_usd:.2f} spent and "
                    f"{rates} would pass the cap before the next check; stop"
                )
                logger.warning(message)
                return BudgetDecision(
                    action=BudgetAction.STOP,
                    message=message,
                    budget=budget,
                    spent_usd=spent,
                    remaining_usd=left,
                )
            for threshold in budget.warn_at:
                mark = (label, threshold)
                if spent >= threshold * budget.limit_usd and mark not in self._warned:
                    self._warned.add(mark)
                    crossed.append(mark)
            if tightest is None or left < tightest.remaining_usd:
                tightest = BudgetDecision(
                    action=BudgetAction.CONTINUE,
                    message=f"{label} budget: ${spent:.2f} of ${budget.limit_usd:.2f} spent",
                    budget=budget,
                    spent_usd=spent,
                    remaining_usd=left,
                )
        if tightest is None:
            return BudgetDecision(action=BudgetAction.CONTINUE, message="no budget applies")
        if crossed:
            marks = ", ".join(f"{label} at {threshold:.0%}" for label, threshold in crossed)
            message = f"budget warning: {marks}; {tightest.message}"
            logger.warning(message)
            return attrs.evolve(
                tightest, action=BudgetAction.WARN, message=message, crossed=tuple(crossed)
            )
        return tightest
