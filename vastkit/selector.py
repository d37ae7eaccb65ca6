"""Choose what to rent: a profile becomes a search query, offers become ranked candidates.

Pure policy (layer 2): plain data in, decisions out, no I/O. The caller searches with
:func:`build_query`, then passes the offers (and the ledger's blocked machines) to
:func:`explain_offers` or :func:`select_offers`::

    query = build_query(profile)
    offers = client.search_offers(query)
    best = select_offers(profile, offers, now=clock.now(), blocked=ledger.blocked_machines(now))[0]

Every offer the server returns is checked again on this side against every constraint of the
profile (the server's filters are loose: it may return stale rows, and ``dph_total`` in a search
is priced with the search's storage, not the bid). :class:`Explanation` says, for every rejected
offer, which constraints rejected it.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs

from vastkit.api.models import Offer
from vastkit.api.query import OfferQuery
from vastkit.errors import NoOfferError, VastkitError
from vastkit.profiles import GpuProfile

__all__ = [
    "Candidate",
    "Explanation",
    "NoOfferAdvice",
    "Reason",
    "Rejection",
    "Search",
    "Suggestion",
    "advise",
    "bad_prices",
    "build_query",
    "effective_price",
    "explain_offers",
    "no_offer_error",
    "relaxed_query",
    "select_offers",
]

logger = logging.getLogger("vastkit.selector")

MIN_BID = 0.001
"""Vast's smallest accepted bid in $/h."""
DEFAULT_LIMIT = 1000
"""How many offers :func:`build_query` asks for."""


class Reason(enum.StrEnum):
    """Why an offer was rejected, in the order the checks run."""

    BAD_PRICE = "bad_price"
    """A price of the offer (``dph_base``, ``dph_total``, ``storage_cost``, ``min_bid``,
    ``inet_up_cost``, ``inet_down_cost``) is not a finite number of 0 or more: the answer is
    garbled, and such an offer would rank first as the cheapest."""
    GPU_NAME = "gpu_name"
    """The GPU model is not one the profile accepts."""
    NUM_GPUS = "num_gpus"
    """The offer has a different number of GPUs."""
    NOT_RENTABLE = "not_rentable"
    """The offer is not rentable now, or the caller already rents on it."""
    UNVERIFIED = "unverified"
    """The machine is not verified and the profile wants verified machines."""
    NOT_DATACENTER = "not_datacenter"
    """The host is not a datacenter and the profile wants one."""
    REGION = "region"
    """The machine's country is not in the profile's regions."""
    GPU_RAM = "gpu_ram"
    """Less GPU memory than ``min_gpu_ram_gb``."""
    CUDA = "cuda"
    """The driver supports an older CUDA than ``min_cuda``."""
    INET_DOWN = "inet_down"
    """Slower download than ``min_inet_down_mbps``."""
    DISK = "disk"
    """Less free disk than the profile's ``disk_gb``."""
    RELIABILITY = "reliability"
    """Reliability below ``reliability_min``."""
    CONTRACT_ENDS = "contract_ends"
    """The host's contract ends before ``max_duration_hours`` from now."""
    BLOCKED = "blocked"
    """The machine is blocked (it failed us recently)."""
    NOT_BIDDABLE = "not_biddable"
    """Interruptible profile, but the offer has no ``min_bid``."""
    PRICE = "price"
    """The effective price (GPU rate or bid, plus storage) is above ``max_dph``, or the bid
    cap is below the minimum bid."""
    EXTRA_QUERY = "extra_query"
    """A condition of the profile's ``extra_query`` fails."""


_REASON_TEXT: Mapping[Reason, str] = {
    Reason.BAD_PRICE: "price not a finite number of 0 or more",
    Reason.GPU_NAME: "GPU model not accepted",
    Reason.NUM_GPUS: "wrong number of GPUs",
    Reason.NOT_RENTABLE: "not rentable now",
    Reason.UNVERIFIED: "machine not verified",
    Reason.NOT_DATACENTER: "not a datacenter host",
    Reason.REGION: "outside the allowed regions",
    Reason.GPU_RAM: "too little GPU memory",
    Reason.CUDA: "CUDA too old",
    Reason.INET_DOWN: "download too slow",
    Reason.DISK: "too little free disk",
    Reason.RELIABILITY: "reliability too low",
    Reason.CONTRACT_ENDS: "host contract ends too soon",
    Reason.BLOCKED: "machine blocked",
    Reason.NOT_BIDDABLE: "no minimum bid (cannot bid)",
    Reason.PRICE: "too expensive",
    Reason.EXTRA_QUERY: "extra_query condition fails",
}


@attrs.frozen(kw_only=True)
class Rejection:
    """One rejected offer and every reason it was rejected.

    Attributes:
        offer: The offer.
        reasons: Every failed constraint, in check order.
        details: A short text per reason (``"reliability 0.91 < 0.95"``).
    """

    offer: Offer
    reasons: tuple[Reason, ...]
    details: tuple[str, ...]

    @property
    def reason(self) -> Reason:
        """The first failed constraint."""
        return self.reasons[0]

    def __str__(self) -> str:
        return f"offer {self.offer.id} (machine {self.offer.machine_id}): " + "; ".join(
            self.details
        )


@attrs.frozen(kw_only=True)
class Candidate:
    """An offer that satisfies every constraint, with what renting it will cost.

    Attributes:
        offer: The offer.
        gpu_dph: GPU rate in $/h for the whole offer: ``dph_base`` on-demand, the bid otherwise.
        storage_dph: Storage for the profile's ``disk_gb`` in $/h.
        bid: The bid to send (``CreateInstanceRequest.price``) for an interruptible rental;
            None for on-demand.
        effective_dph: ``gpu_dph + storage_dph``: what the rental costs per hour while running.
    """

    offer: Offer
    gpu_dph: float
    storage_dph: float
    bid: float | None
    effective_dph: float

    @property
    def perf_per_dollar(self) -> float:
        """``dlperf`` per effective $/h (0 when the offer has no ``dlperf``)."""
        dlperf = self.offer.dlperf
        if dlperf is None or not math.isfinite(dlperf) or not self.effective_dph > 0:
            return 0.0
        return dlperf / self.effective_dph


@attrs.frozen(kw_only=True)
class Explanation:
    """Everything the selector decided about one list of offers.

    Attributes:
        profile: The profile.
        candidates: Qualifying offers, best first.
        rejections: Every other offer with its reasons, in input order.
    """

    profile: GpuProfile
    candidates: tuple[Candidate, ...]
    rejections: tuple[Rejection, ...]

    @property
    def considered(self) -> int:
        """How many offers were looked at."""
        return len(self.candidates) + len(self.rejections)

    def counts(self) -> dict[Reason, int]:
        """Rejected offers per reason, most common first (an offer counts once per reason).

        Returns:
            ``{Reason.PRICE: 12, Reason.RELIABILITY: 3, ...}``.
        """
        counter: Counter[Reason] = Counter()
        for rejection in self.rejections:
            counter.update(rejection.reasons)
        order = list(Reason)
        return dict(sorted(counter.items(), key=lambda kv: (-kv[1], order.index(kv[0]))))

    def first_reason_counts(self) -> dict[Reason, int]:
        """Rejected offers per first reason; the values add up to ``len(rejections)``."""
        counter = Counter(rejection.reason for rejection in self.rejections)
        order = list(Reason)
        return dict(sorted(counter.items(), key=lambda kv: (-kv[1], order.index(kv[0]))))

    def summary(self) -> str:
        """One paragraph: how many offers qualified, and why the others did not.

        Returns:
            e.g. ``"profile 'dev-test': 0 of 14 offers qualify; rejected: too expensive (11),
            reliability too low (4)"``.
        """
        head = (
            f"profile '{self.profile.name}': {len(self.candidates)} of {self.considered} "
            f"offer{'s' if self.considered != 1 else ''} qualify"
        )
        if not self.considered:
            return head + (
                " (the search returned no offers: the server applies the profile's filters;"
                f" `vastkit offers --profile {self.profile.name}` shows the nearest offers and the"
                " change that would rent)"
            )
        counts = self.counts()
        if not counts:
            return head
        parts = ", ".join(f"{_REASON_TEXT[reason]} ({n})" for reason, n in counts.items())
        return f"{head}; rejected: {parts}"

    def __str__(self) -> str:
        lines = [self.summary()]
        lines.extend(f"  {rejection}" for rejection in self.rejections)
        return "\n".join(lines)


def build_query(profile: GpuProfile, *, limit: int = DEFAULT_LIMIT) -> OfferQuery:
    """Build the offer search for ``profile``.

    The query filters on everything the server can check (GPU model and count, reliability,
    verification, datacenter, regions, GPU memory, CUDA, bandwidth, disk, contract duration,
    ``dph_total`` within ``max_dph``), prices storage for the profile's disk, sets the rental
    type (``bid`` for interruptible) and orders by the profile's ranking. ``extra_query`` is
    merged last.

    Args:
        profile: The profile.
        limit: The most offers to ask for.

    Returns:
        The query (``.to_dict()`` gives the wire object).
    """
    names = list(profile.gpu_name)
    query = OfferQuery()
    query = (
        query.where("gpu_name", "in", names)
        if len(names) > 1
        else query.where("gpu_name", "eq", names[0])
    )
    query = (
        query.where("num_gpus", "eq", profile.num_gpus)
        .where("rentable", "eq", True)
        .where("rented", "eq", False)
        .where("reliability", "gte", profile.reliability_min)
        .where("disk_space", "gte", profile.disk_gb)
        .where("duration", "gte", profile.max_duration_s)
        .where("dph_total", "lte", profile.max_dph)
    )
    if profile.verified:
        query = query.where("verified", "eq", True)
    if profile.datacenter_only:
        query = query.where("datacenter", "eq", True)
    if profile.regions:
        query = query.where("geolocation", "in", list(profile.regions))
    if profile.min_gpu_ram_gb is not None:
        query = query.where("gpu_ram", "gte", profile.min_gpu_ram_gb * 1000.0)
    if profile.min_cuda is not None:
        query = query.where("cuda_max_good", "gte", profile.min_cuda)
    if profile.min_inet_down_mbps is not None:
        query = query.where("inet_down", "gte", profile.min_inet_down_mbps)
    for column, ops in profile.extra_query.items():
        if isinstance(ops, Mapping):
            for op, value in ops.items():
                query = query.where(column, op, value)
    order = {
        "price": [("dph_total", "asc")],
        "perf_per_dollar": [("dlperf_per_dphtotal", "desc")],
        "score": [("score", "desc")],
    }[profile.rank_by]
    return (
        query.order_by(*order)
        .with_type("interruptible" if profile.interruptible else "on-demand")
        .with_limit(limit)
        .with_storage(profile.disk_gb)
    )


def effective_price(profile: GpuProfile, offer: Offer) -> tuple[float, float | None, str | None]:
    """What renting ``offer`` under ``profile`` costs per hour, and the bid to send.

    On-demand: ``dph_base`` plus storage for ``disk_gb``. Interruptible: the bid is ``min_bid``
    raised by ``bid_margin``, then capped by ``max_bid`` and by ``max_dph`` minus storage (but
    never below ``min_bid``, nor below Vast's $0.001); the price is the bid plus storage.

    Args:
        profile: The profile.
        offer: The offer.

    Returns:
        ``(effective $/h, bid or None, problem or None)``: a problem text when the offer cannot be
        rented within the caps (the price is then what the cheapest acceptable rental would cost).
    """
    storage = offer.storage_dph(profile.disk_gb)
    if not profile.interruptible:
        price = offer.dph_base + storage
        if price > profile.max_dph:
            return (
                price,
                None,
                (
                    f"{price:.4f} $/h ({offer.dph_base:.4f} GPU + {storage:.4f} storage) "
                    f"> max_dph {profile.max_dph:g}"
                ),
            )
        return price, None, None
    min_bid = max(offer.min_bid or 0.0, MIN_BID)
    cap = profile.max_dph - storage
    if profile.max_bid is not None:
        cap = min(cap, profile.max_bid)
    bid = min(min_bid * (1.0 + profile.bid_margin), cap)
    if bid < min_bid:
        floor = min_bid + storage
        if profile.max_bid is not None and profile.max_bid < min_bid:
            return floor, None, f"min_bid {min_bid:.4f} $/h > max_bid {profile.max_bid:g}"
        return (
            floor,
            None,
            (
                f"{floor:.4f} $/h (min_bid {min_bid:.4f} + {storage:.4f} storage) "
                f"> max_dph {profile.max_dph:g}"
            ),
        )
    return bid + storage, bid, None


_EXTRA_FIELDS: Mapping[str, str] = {
    "gpu_ram": "gpu_ram_mb",
    "gpu_total_ram": "gpu_total_ram_mb",
    "cpu_ram": "cpu_ram_mb",
    "disk_space": "disk_space_gb",
    "disk_bw": "disk_bw_mb_s",
    "inet_up": "inet_up_mbps",
    "inet_down": "inet_down_mbps",
    "inet_up_cost": "inet_up_cost_per_gb",
    "inet_down_cost": "inet_down_cost_per_gb",
    "storage_cost": "storage_cost_per_gb_month",
    "reliability2": "reliability",
    "dph": "dph_total",
}


def _offer_value(offer: Offer, column: str) -> tuple[bool, Any]:
    if column == "datacenter":
        return True, offer.datacenter
    if column == "verified":
        return True, offer.verified
    attribute = _EXTRA_FIELDS.get(column, column)
    if attribute.startswith("_") or not hasattr(offer, attribute):
        return False, None
    value = getattr(offer, attribute)
    return not callable(value), value


def _holds(value: Any, op: str, operand: Any) -> bool:
    try:
        if op == "eq":
            return bool(value == operand)
        if op == "neq":
            return bool(value != operand)
        if op == "in":
            return value in operand
        if op == "notin":
            return value not in operand
        if value is None:
            return False
        number = float(value)
        target = float(operand)
    except (TypeError, ValueError):
        return False
    return {
        "gt": number > target,
        "gte": number >= target,
        "lt": number < target,
        "lte": number <= target,
    }.get(op, True)


_PRICE_FIELDS: Mapping[str, str] = {
    "dph_base": "dph_base",
    "dph_total": "dph_total",
    "storage_cost_per_gb_month": "storage_cost",
    "min_bid": "min_bid",
    "inet_up_cost_per_gb": "inet_up_cost",
    "inet_down_cost_per_gb": "inet_down_cost",
}


def bad_prices(offer: Offer) -> list[str]:
    """The offer's prices that are not a finite number of 0 or more, as ``"name value"``.

    Args:
        offer: The offer.

    Returns:
        ``["dph_base nan", "min_bid -1"]``; empty when every price is sound (an absent
        ``min_bid`` is sound).
    """
    found = []
    for attribute, name in _PRICE_FIELDS.items():
        value = getattr(offer, attribute)
        if value is None and attribute == "min_bid":
            continue
        sound = isinstance(value, int | float) and not isinstance(value, bool)
        if not (sound and math.isfinite(value) and value >= 0):
            found.append(f"{name} {value!r}")
    return found


def _below(value: float | None, minimum: float) -> bool:
    """``value < minimum``, where a missing or NaN value counts as below (fails closed)."""
    return not (value is not None and value >= minimum)


def _check(
    profile: GpuProfile, offer: Offer, now: float, blocked: Collection[int]
) -> tuple[list[Reason], list[str], Candidate | None]:
    reasons: list[Reason] = []
    details: list[str] = []

    def fail(reason: Reason, detail: str) -> None:
        reasons.append(reason)
        details.append(detail)

    garbled = bad_prices(offer)
    if garbled:
        fail(Reason.BAD_PRICE, "bad price: " + ", ".join(garbled))

    if offer.gpu_name not in profile.gpu_name:
        fail(Reason.GPU_NAME, f"GPU {offer.gpu_name!r} not in {list(profile.gpu_name)}")
    if offer.num_gpus != profile.num_gpus:
        fail(Reason.NUM_GPUS, f"{offer.num_gpus} GPUs, profile wants {profile.num_gpus}")
    if not offer.rentable or offer.rented:
        fail(Reason.NOT_RENTABLE, "already rented by you" if offer.rented else "not rentable")
    if profile.verified and not offer.verified:
        fail(Reason.UNVERIFIED, f"verification {offer.verification or 'unknown'}")
    if profile.datacenter_only and not offer.datacenter:
        fail(Reason.NOT_DATACENTER, "not a datacenter host")
    if profile.regions and offer.country_code not in profile.regions:
        country = offer.country_code or "unknown"
        fail(Reason.REGION, f"country {country} not in {list(profile.regions)}")
    if profile.min_gpu_ram_gb is not None and _below(
        offer.gpu_ram_mb, profile.min_gpu_ram_gb * 1e3
    ):
        fail(
            Reason.GPU_RAM, f"{offer.gpu_ram_mb / 1000:.1f} GB per GPU < {profile.min_gpu_ram_gb:g}"
        )
    if profile.min_cuda is not None and _below(offer.cuda_max_good, profile.min_cuda):
        fail(Reason.CUDA, f"CUDA {offer.cuda_max_good} < {profile.min_cuda:g}")
    if profile.min_inet_down_mbps is not None and _below(
        offer.inet_down_mbps, profile.min_inet_down_mbps
    ):
        fail(Reason.INET_DOWN, f"{offer.inet_down_mbps} Mb/s down < {profile.min_inet_down_mbps:g}")
    if _below(offer.disk_space_gb, profile.disk_gb):
        fail(Reason.DISK, f"{offer.disk_space_gb:g} GB free < disk_gb {profile.disk_gb:g}")
    if _below(offer.reliability, profile.reliability_min):
        fail(Reason.RELIABILITY, f"reliability {offer.reliability:.3f} < {profile.reliability_min}")
    needed_until = now + profile.max_duration_s
    ends = offer.end_date
    if ends is None and offer.duration is not None:
        ends = now + offer.duration
    if ends is not None and _below(ends, needed_until):
        left_h = (ends - now) / 3600
        fail(
            Reason.CONTRACT_ENDS,
            f"contract ends in {left_h:.1f} h < max_duration_hours {profile.max_duration_hours:g}",
        )
    if offer.machine_id in blocked:
        fail(Reason.BLOCKED, f"machine {offer.machine_id} is blocked")
    price, bid, problem = (0.0, None, None)
    if garbled:
        pass  # a garbled price prices nothing (a NaN compares false with every cap)
    elif profile.interruptible and offer.min_bid is None:
        fail(Reason.NOT_BIDDABLE, "offer has no min_bid")
    else:
        price, bid, problem = effective_price(profile, offer)
        if problem is not None:
            fail(Reason.PRICE, problem)
    for column, ops in profile.extra_query.items():
        known, value = _offer_value(offer, column)
        if not known or not isinstance(ops, Mapping):
            continue
        for op, operand in ops.items():
            if not _holds(value, op, operand):
                fail(Reason.EXTRA_QUERY, f"{column} {value!r} fails {op} {operand!r}")
    if reasons:
        return reasons, details, None
    storage = offer.storage_dph(profile.disk_gb)
    gpu = bid if bid is not None else offer.dph_base
    return (
        reasons,
        details,
        Candidate(offer=offer, gpu_dph=gpu, storage_dph=storage, bid=bid, effective_dph=price),
    )


def _rank_key(profile: GpuProfile, candidate: Candidate) -> tuple[float, ...]:
    offer = candidate.offer
    tail = (candidate.effective_dph, -offer.reliability, float(offer.machine_id), float(offer.id))
    if profile.rank_by == "perf_per_dollar":
        return (-candidate.perf_per_dollar, *tail)
    if profile.rank_by == "score":
        score = offer.score if offer.score is not None and math.isfinite(offer.score) else -math.inf
        return (-score, *tail)
    return tail


def explain_offers(
    profile: GpuProfile,
    offers: Iterable[Offer],
    *,
    now: float,
    blocked: Collection[int] = frozenset(),
) -> Explanation:
    """Check every offer against ``profile`` and rank those that qualify.

    Ranking: ``price`` orders by effective $/h; ``perf_per_dollar`` by ``dlperf`` per effective
    $/h (highest first); ``score`` by Vast's score (highest first). Ties break by effective price,
    then higher reliability, then lower machine id, then lower offer id, so the order never
    depends on the order of the input. An offer id that appears twice is considered once.

    Args:
        profile: The profile.
        offers: The search results.
        now: The current time (Unix seconds), for the contract-duration check.
        blocked: Machine ids not to rent (e.g. ``ledger.blocked_machines(now)``).

    Returns:
        The explanation: ranked candidates and every rejection with its reasons.
    """
    seen: set[int] = set()
    candidates: list[Candidate] = []
    rejections: list[Rejection] = []
    for offer in offers:
        if offer.id in seen:
            continue
        seen.add(offer.id)
        reasons, details, candidate = _check(profile, offer, now, blocked)
        if candidate is None:
            rejections.append(
                Rejection(offer=offer, reasons=tuple(reasons), details=tuple(details))
            )
        else:
            candidates.append(candidate)
    candidates.sort(key=lambda c: _rank_key(profile, c))
    return Explanation(profile=profile, candidates=tuple(candidates), rejections=tuple(rejections))


def select_offers(
    profile: GpuProfile,
    offers: Iterable[Offer],
    *,
    now: float,
    blocked: Collection[int] = frozenset(),
    search: Search | None = None,
) -> tuple[Candidate, ...]:
    """The qualifying offers for ``profile``, best first.

    Args:
        profile: The profile.
        offers: The search results.
        now: The current time (Unix seconds).
        blocked: Machine ids not to rent.
        search: The offer search (``client.search_offers``). When nothing qualifies, it runs
            once more with :func:`relaxed_query`, and the error says what change would rent.

    Returns:
        At least one candidate.

    Raises:
        NoOfferError: No offer qualifies; ``.explanation`` is the :class:`Explanation`,
            ``.suggestions`` the changes that would rent (with ``search``), and the message
            says both in a line or two.
    """
    explanation = explain_offers(profile, offers, now=now, blocked=blocked)
    if not explanation.candidates:
        raise no_offer_error(explanation, now=now, blocked=blocked, search=search)
    return explanation.candidates


def no_offer_error(
    explanation: Explanation,
    *,
    now: float,
    blocked: Collection[int] = frozenset(),
    search: Search | None = None,
) -> NoOfferError:
    """The :class:`~vastkit.errors.NoOfferError` for a search where nothing qualified.

    With ``search``, one relaxed search (:func:`relaxed_query`) finds the nearest misses and
    the error's first line says the smallest change that would rent (:func:`advise`); a failed
    relaxed search is logged and left out.

    Args:
        explanation: What the selector decided about the profile's own search.
        now: The current time (Unix seconds).
        blocked: Machine ids not to rent.
        search: The offer search, or None for no relaxed search.

    Returns:
        The error, to raise.
    """
    profile = explanation.profile
    advice: NoOfferAdvice | None = None
    if search is not None:
        try:
            nearby = search(relaxed_query(profile))
        except VastkitError as exc:
            logger.warning("the relaxed offer search for profile %r failed: %s", profile.name, exc)
        else:
            advice = advise(profile, nearby, now=now, blocked=blocked)
    if advice is None:
        return NoOfferError(f"no offer qualifies: {explanation.summary()}", explanation=explanation)
    summary = explanation.summary() if explanation.considered else ""
    return NoOfferError(
        advice.headline + (f"\n{summary}" if summary else ""),
        explanation=explanation,
        suggestions=advice.suggestions,
        advice=advice,
    )


# -- "no offer" says what would ---------------------------------------------------------------

Search = Callable[[OfferQuery], Sequence[Offer]]
"""An offer search: a query in, offers out (``client.search_offers``)."""

_RELAXED_DROPPED = ("dph_total", "reliability")
_NO_CAP = 1e9


def relaxed_query(profile: GpuProfile, *, limit: int = DEFAULT_LIMIT) -> OfferQuery:
    """The search for the nearest misses of ``profile``: no price cap, no reliability floor.

    It searches on-demand offers (whose ``dph_base`` is the on-demand rate and whose ``min_bid``
    prices a bid), so one search prices both rental types. The other filters stay.

    Args:
        profile: The profile.
        limit: The most offers to ask for.

    Returns:
        The query.
    """
    query = build_query(attrs.evolve(profile, rental="on-demand", max_bid=None), limit=limit)
    for column in _RELAXED_DROPPED:
        query = query.without(column)
    return query


@attrs.frozen(kw_only=True)
class Suggestion:
    """One change to a profile that would rent, and what it would find.

    Attributes:
        changes: The profile keys to set and their values (``{"max_dph": 0.26}``,
            ``{"rental": "interruptible"}``).
        offers: How many offers qualify after the change.
        cheapest_dph: The cheapest effective $/h after the change.
    """

    changes: Mapping[str, Any]
    offers: int
    cheapest_dph: float

    def __str__(self) -> str:
        return " with ".join(
            f"`{key}: {_yaml_value(value)}`" for key, value in self.changes.items()
        )


@attrs.frozen(kw_only=True)
class NoOfferAdvice:
    """What the nearest misses of a profile say.

    Attributes:
        headline: One line: what was asked, the cheapest miss, and the changes that would rent.
        suggestions: The changes, smallest first.
        explanation: The profile checked against the relaxed search's offers.
    """

    headline: str
    suggestions: tuple[Suggestion, ...]
    explanation: Explanation


def _yaml_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _money(value: float) -> str:
    text = f"{value:.3f}" if value < 10 else f"{value:.2f}"
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}/h"


def _cap_for(price: float) -> float:
    """The smallest round ``max_dph`` at or above ``price`` (cents below $10, dimes above)."""
    step = 0.01 if price < 10 else 0.1
    return round(math.ceil(round(price / step, 6)) * step, 2)


def _round_above(price: float) -> float:
    """A round price about 15% above ``price``, for "N offers under $X"."""
    step = 0.05 if price < 1 else 0.5 if price < 10 else 5.0
    return round(math.ceil(round(price * 1.15 / step, 6)) * step, 2)


def _what(profile: GpuProfile) -> str:
    names = "/".join(profile.gpu_name) if len(profile.gpu_name) <= 3 else "GPU"
    gpus = f"{profile.num_gpus}x {names}" if profile.num_gpus > 1 else names
    rental = "interruptible" if profile.interruptible else "on demand"
    return f"no {gpus} at <= ${profile.max_dph:g}/h {rental}"


def _cheapest(explanation: Explanation) -> float:
    return min(c.effective_dph for c in explanation.candidates)


def advise(
    profile: GpuProfile,
    offers: Iterable[Offer],
    *,
    now: float,
    blocked: Collection[int] = frozenset(),
) -> NoOfferAdvice:
    """Say the smallest changes to ``profile`` that would rent one of ``offers``.

    ``offers`` come from :func:`relaxed_query`. Tried, each on its own: a higher ``max_dph``
    (to the cheapest miss, rounded up to the cent), the other rental type at the same cap, a
    lower ``reliability_min``; then the other rental type with a higher ``max_dph``.

    Args:
        profile: The profile that found nothing.
        offers: The relaxed search's offers.
        now: The current time (Unix seconds).
        blocked: Machine ids not to rent.

    Returns:
        The advice; ``suggestions`` is empty when no change of these keys would rent.
    """
    offers = list(offers)

    def check(**changes: Any) -> Explanation:
        return explain_offers(attrs.evolve(profile, **changes), offers, now=now, blocked=blocked)

    other = "on-demand" if profile.interruptible else "interruptible"
    other_text = "on-demand" if profile.interruptible else "interruptible"
    parts = [_what(profile)]
    suggestions: list[Suggestion] = []
    priced = check(max_dph=_NO_CAP, max_bid=None)
    if priced.candidates:
        cheapest = _cheapest(priced)
        under = _round_above(max(cheapest, profile.max_dph))
        n_under = sum(c.effective_dph < under for c in priced.candidates)
        parts.append(
            f"cheapest is {_money(cheapest)} ({n_under} offer{'s' if n_under != 1 else ''} under"
            f" ${under:g})"
        )
        cap = _cap_for(cheapest)
        suggestions.append(
            Suggestion(
                changes={"max_dph": cap},
                offers=len(check(max_dph=cap, max_bid=None).candidates),
                cheapest_dph=cheapest,
            )
        )
    switched = check(rental=other, max_bid=None)
    if switched.candidates:
        cheapest = _cheapest(switched)
        n = len(switched.candidates)
        parts.append(f"{n} {other_text} offer{'s' if n != 1 else ''} from {_money(cheapest)}")
        suggestions.append(Suggestion(changes={"rental": other}, offers=n, cheapest_dph=cheapest))
    if profile.reliability_min > 0:
        trusting = check(reliability_min=0.0)
        if trusting.candidates:
            best = max(c.offer.reliability for c in trusting.candidates)
            floor = math.floor(best * 100) / 100
            found = check(reliability_min=floor)
            if found.candidates:
                n = len(found.candidates)
                parts.append(f"{n} offer{'s' if n != 1 else ''} with reliability >= {floor:g}")
                suggestions.append(
                    Suggestion(
                        changes={"reliability_min": floor}, offers=n, cheapest_dph=_cheapest(found)
                    )
                )
    if not suggestions:
        both = check(rental=other, max_dph=_NO_CAP, max_bid=None)
        if both.candidates:
            cheapest = _cheapest(both)
            parts.append(f"cheapest {other_text} is {_money(cheapest)}")
            suggestions.append(
                Suggestion(
                    changes={"rental": other, "max_dph": _cap_for(cheapest)},
                    offers=len(
                        check(rental=other, max_dph=_cap_for(cheapest), max_bid=None).candidates
                    ),
                    cheapest_dph=cheapest,
                )
            )
    if suggestions:
        tail = "set " + " or ".join(str(s) for s in suggestions)
    elif not offers:
        tail = (
            "and no offer of that GPU and count passes the other filters at any price"
            " (try other gpu_name or num_gpus)"
        )
    else:
        loose = check(max_dph=_NO_CAP, max_bid=None, reliability_min=0.0)
        reasons = ", ".join(
            f"{_REASON_TEXT[reason]} ({n})" for reason, n in loose.first_reason_counts().items()
        )
        tail = f"and at any price {len(offers)} nearby offers fail: {reasons}"
    headline = "; ".join(parts) + (": " if suggestions else " ") + tail
    return NoOfferAdvice(headline=headline, suggestions=tuple(suggestions), explanation=priced)
