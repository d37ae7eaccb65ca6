"""Type-checked, never run: every name of ``vastkit.__all__`` used as a user would.

``tests/typing/test_facade_coverage.py`` checks that each exported name appears here (or in a
sibling file) as ``vastkit.<name>``.
"""

from __future__ import annotations

from pathlib import Path

import httpx

import vastkit
from vastkit.cost_report import CostRow
from vastkit.reconcile import ReconcileReport
import vastkit.api.models
import vastkit.api.query
import vastkit.artifacts
import vastkit.budget
import vastkit.checkpoint
import vastkit.errors
import vastkit.health
import vastkit.jobs
import vastkit.rundir
import vastkit.selector

version: str = vastkit.__version__

# -- the API client and its records ---------------------------------------------------------------

query: vastkit.OfferQuery = vastkit.OfferQuery().where("num_gpus", "gte", 1)
wire: dict[str, object] = vastkit.api.query.parse_query("num_gpus>=1 dph<1.0")
order: list[list[str]] = vastkit.api.query.parse_order("dph+")
request = vastkit.api.models.CreateInstanceRequest(image="pytorch/pytorch:latest", disk_gb=20.0)
binding = vastkit.api.models.PortBinding(host_ip="0.0.0.0", host_port=20000)
item = vastkit.api.models.ChargeItem(type="gpu", amount=0.5)
charge = vastkit.api.models.Charge(source="instance", amount=0.5, items=(item,))

with vastkit.Client("key", base_url="http://127.0.0.1:8765") as client:
    offers: list[vastkit.Offer] = client.search_offers(query)
    created: vastkit.api.models.CreatedInstance = client.create_instance(offers[0].id, request)
    user: vastkit.api.models.User = client.current_user()
    state: vastkit.InstanceState | None = None
    record: vastkit.InstanceInfo | None = client.get_instance(created.id)
    if record is not None:
        state = record.state
    running: bool = state is vastkit.InstanceState.RUNNING

# -- profiles, selection, money -------------------------------------------------------------------

profiles: dict[str, vastkit.GpuProfile] = vastkit.builtin_profiles()
profile: vastkit.GpuProfile = vastkit.get_profile("dev-test")
loaded: dict[str, vastkit.GpuProfile] = vastkit.load_profiles("gpu_profiles.yaml")
built: vastkit.OfferQuery = vastkit.selector.build_query(profile, limit=100)
price: tuple[float, float | None, str | None] = vastkit.selector.effective_price(profile, offers[0])
picked: tuple[vastkit.selector.Candidate, ...] = vastkit.selector.select_offers(profile, offers, now=0.0)
why: vastkit.selector.Explanation = vastkit.explain_offers(profile, offers, now=0.0)
best_dph: float = picked[0].effective_dph if picked else why.profile.max_dph

budgets: vastkit.Budgets = vastkit.load_budgets("budgets.yaml")
cap = vastkit.Budget(scope="project", name="vision", limit_usd=100.0)
guard: vastkit.BudgetGuard | None = None
decision: vastkit.budget.BudgetDecision | None = guard.check(0.5) if guard is not None else None
stop: bool = decision is not None and decision.action is vastkit.budget.BudgetAction.STOP

# -- renting an instance --------------------------------------------------------------------------

timeouts = vastkit.InstanceTimeouts(provisioning=300.0, poll_interval=2.0)


def on_instance_event(event: vastkit.InstanceEvent) -> None:
    print(event.kind, event.message)


with vastkit.Instance("dev-test", image="python:3.12", timeouts=timeouts) as inst:
    pass

# -- jobs, results, ledger, reports ---------------------------------------------------------------

job_timeouts = vastkit.JobTimeouts(poll_interval=5.0)


def attempts_cost(result: vastkit.JobResult) -> float:
    breakdown: vastkit.jobs.CostBreakdown = result.cost
    first: vastkit.jobs.AttemptSummary | None = result.attempts[0] if result.attempts else None
    outputs: tuple[vastkit.artifacts.OutputFile, ...] | list[vastkit.artifacts.OutputFile] = result.outputs
    n: int = first.attempt if first is not None else 0
    return breakdown.gpu_usd + n + len(outputs)


spec: vastkit.rundir.JobSpec | None = None
run_dir = vastkit.rundir.RunDir("s3://bucket/runs/abc")

with vastkit.Ledger("ledger.db") as ledger:
    report: vastkit.CostReport = vastkit.cost_report(ledger, "project")
    rows: tuple[CostRow, ...] = report.rows
    with vastkit.Client("key") as api:
        reconciled: ReconcileReport = vastkit.reconcile(api, ledger, dry_run=True)
        print(reconciled.summary())

# -- artifacts ------------------------------------------------------------------------------------

local: Path = vastkit.fetch_artifact("s3://bucket/runs/abc/outputs/model.pt", "model.pt")
vastkit.upload_dataset("data/", "s3://bucket/datasets")
chart: Path = vastkit.plot_metrics([], "loss.png", names=["loss"])

# -- checkpoints and health -----------------------------------------------------------------------


def checkpoint_failed(exc: vastkit.CheckpointError) -> bool:
    return isinstance(exc, vastkit.errors.CheckpointCorruptError)


warning_kind: type[Warning] = vastkit.checkpoint.CheckpointWarning
health_item = vastkit.health.CheckItem(name="key", status=vastkit.health.CheckStatus.OK, detail="found")

# -- errors ---------------------------------------------------------------------------------------


def describe(exc: vastkit.VastkitError) -> str:
    if isinstance(exc, vastkit.errors.SearchQuotaExceededError):
        return f"quota until {exc.resets_at}"
    if isinstance(exc, vastkit.RateLimitError):
        return f"slow down {exc.retry_after}"
    if isinstance(
        exc,
        vastkit.errors.BadRequestError
        | vastkit.AuthenticationError
        | vastkit.errors.PermissionDeniedError
        | vastkit.errors.NotFoundError
        | vastkit.errors.GoneError
        | vastkit.errors.ServerError,
    ):
        return str(exc.status_code)
    if isinstance(exc, vastkit.errors.APITimeoutError | vastkit.APIConnectionError):
        request: httpx.Request | None = exc.request
        return f"no answer to {request}"
    if isinstance(exc, vastkit.errors.ResponseValidationError):
        return "; ".join(exc.errors)
    if isinstance(exc, vastkit.APIError):
        return "api"
    if isinstance(exc, vastkit.DestroyFailedError):
        return f"check instance {exc.instance_id}"
    if isinstance(exc, vastkit.BudgetExceededError | vastkit.NoOfferError):
        return "money or market"
    if isinstance(exc, vastkit.ProvisioningError | vastkit.JobError | vastkit.LedgerError):
        return "run"
    return "other"
