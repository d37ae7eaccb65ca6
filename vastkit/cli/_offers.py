"""Choosing hardware: ``vastkit offers`` (rank the marketplace) and ``vastkit profiles``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from vastkit.errors import NoOfferError

from ._context import Context
from ._output import ExitCode, UsageError, format_money
from ._parser import Commands

if TYPE_CHECKING:
    from vastkit.profiles import GpuProfile
    from vastkit.selector import Explanation

__all__ = ["register_offers", "register_profiles"]


def register_offers(commands: Commands) -> None:
    """Add ``vastkit offers``."""
    p = commands.add(
        "offers",
        "search the marketplace and rank offers",
        "Rank offers for a profile (checked against every constraint, priced with storage, bid "
        "for interruptible) or for a free query in the official CLI's language, e.g.\n"
        "  vastkit offers --profile dev-test --explain\n"
        "  vastkit offers 'gpu_name=RTX_4090 num_gpus=1 reliability>0.98' --limit 5",
        handler=_cmd_offers,
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
        "--gpu-names",
        action="store_true",
        help="list the GPU names of a search (QUERY, or the whole market) and flag those not "
        "in vastkit's catalog",
    )
    p.add_argument(
        "--type",
        choices=("on-demand", "interruptible"),
        default=None,
        help="rental type (default: the profile's, else on-demand)",
    )
    p.add_argument(
        "--order", metavar="ORDER", help="query mode: sort, e.g. 'dph+' (default) or 'score-'"
    )


def register_profiles(commands: Commands) -> None:
    """Add ``vastkit profiles list|validate``."""
    actions = commands.group("profiles", "list or validate GPU profiles", dest="profiles_command")
    q = actions.add(
        "list",
        "list profiles",
        "List the profiles of FILE, or the built-in ones.",
        handler=_cmd_profiles_list,
    )
    q.add_argument("file", nargs="?", metavar="FILE", help="a gpu_profiles.yaml")
    q = actions.add(
        "validate",
        "check a gpu_profiles.yaml",
        "Check a gpu_profiles.yaml; a mistake is reported with its file, line and key (exit 2).",
        handler=_cmd_profiles_validate,
    )
    q.add_argument("file", metavar="FILE", help="a gpu_profiles.yaml")


# --------------------------------------------------------------------------------------------
# offers


def _cmd_offers(ctx: Context) -> int:
    args = ctx.args
    limit: int = args.limit
    if limit <= 0:
        raise UsageError(f"--limit must be positive, got {limit}")
    if args.profile is not None and args.query:
        raise UsageError("give either --profile NAME or a QUERY, not both")
    if args.gpu_names:
        if args.profile is not None:
            raise UsageError("give either --gpu-names or --profile NAME, not both")
        return _gpu_names(ctx)
    if args.profile is None:
        if args.explain:
            raise UsageError("--explain needs --profile NAME (it checks offers against one)")
        return _offers_by_query(ctx, limit)
    return _offers_by_profile(ctx, limit)


def _offers_by_query(ctx: Context, limit: int) -> int:
    args = ctx.args
    text = " ".join(args.query)
    try:
        offers = ctx.client.search_offers(
            text or None, type=args.type, order=args.order or "dph+", limit=limit
        )
    except ValueError as exc:
        raise UsageError(f"bad query: {exc}") from exc
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


def _gpu_names(ctx: Context) -> int:
    from vastkit.gpus import gpu_names_report

    text = " ".join(ctx.args.query)
    try:
        offers = ctx.client.search_offers(text or None, type=ctx.args.type, limit=10_000)
    except ValueError as exc:
        raise UsageError(f"bad query: {exc}") from exc
    report = gpu_names_report(offer.gpu_name for offer in offers)
    if ctx.out.json_mode:
        ctx.out.json({"offers": len(offers), "gpu_names": report.counts, "unknown": report.unknown})
    else:
        ctx.out.line(f"{len(offers)} offers, {len(report.counts)} GPU names:")
        ctx.out.line(str(report))
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
"""Query columns left out with ``--explain``, so the selector can say why offers fail them."""


def _offers_by_profile(ctx: Context, limit: int) -> int:
    from vastkit.profiles import get_profile
    from vastkit.selector import build_query, explain_offers, no_offer_error

    args = ctx.args
    profile = _with_rental(get_profile(args.profile, args.profiles), args.type)
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
    explanation = explain_offers(profile, offers, now=now, blocked=blocked)
    rows = _candidate_rows(explanation, limit)
    if ctx.out.json_mode:
        ctx.out.json(_profile_doc(profile, explanation, rows, explain=args.explain))
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
        error = no_offer_error(
            explanation, now=now, blocked=blocked, search=ctx.client.search_offers
        )
        if error.advice is None and not args.explain:
            raise NoOfferError(
                f"{error} (run with --explain for every reason)", explanation=explanation
            )
        raise error
    return ExitCode.OK


def _with_rental(profile: GpuProfile, rental: str | None) -> GpuProfile:
    """``profile`` with the rental type of ``--type`` (and no bid cap) when it differs."""
    if rental is None or rental == profile.rental:
        return profile
    if rental == "interruptible":
        return attrs.evolve(profile, rental="interruptible", max_bid=None)
    return attrs.evolve(profile, rental="on-demand", max_bid=None)


def _candidate_rows(explanation: Explanation, limit: int) -> list[dict[str, Any]]:
    return [
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


def _profile_doc(
    profile: GpuProfile, explanation: Explanation, rows: list[dict[str, Any]], *, explain: bool
) -> dict[str, Any]:
    """The ``--json`` document of ``offers --profile`` (with the rejections for ``--explain``)."""
    doc: dict[str, Any] = {
        "profile": profile.name,
        "rental": profile.rental,
        "max_dph": profile.max_dph,
        "considered": explanation.considered,
        "qualifying": len(explanation.candidates),
        "offers": rows,
    }
    if explain:
        doc["rejected_by_reason"] = {reason.value: n for reason, n in explanation.counts().items()}
        doc["rejections"] = [
            {
                "offer_id": r.offer.id,
                "machine_id": r.offer.machine_id,
                "reasons": [reason.value for reason in r.reasons],
                "details": list(r.details),
            }
            for r in explanation.rejections
        ]
    return doc


def _offer_table(ctx: Context, rows: Sequence[Mapping[str, Any]], *, title: str) -> None:
    columns = ["#", "offer", "machine", "gpus", "$/h eff", "bid", "perf/$", "reliab", "location"]
    cells = [
        [
            str(r["rank"]),
            str(r["offer_id"]),
            str(r["machine_id"]),
            f"{r['num_gpus']}x {r['gpu_name']} {r['gpu_ram_gb']:g}GB",
            format_money(r["effective_dph"]),
            format_money(r["bid"]),
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


def _explain_text(ctx: Context, explanation: Explanation) -> None:
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
# profiles


def _cmd_profiles_list(ctx: Context) -> int:
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


def _cmd_profiles_validate(ctx: Context) -> int:
    from vastkit.profiles import load_profiles

    profiles = load_profiles(Path(ctx.args.file))
    if ctx.out.json_mode:
        ctx.out.json({"file": ctx.args.file, "valid": True, "profiles": list(profiles)})
    else:
        ctx.out.line(f"{ctx.args.file}: OK, {len(profiles)} profile(s): {', '.join(profiles)}")
    return ExitCode.OK
