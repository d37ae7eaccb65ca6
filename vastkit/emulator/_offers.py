"""Endpoints on offers: search, the GPU name list, and renting an offer (create)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vastkit.emulator._http import ApiError, Response, error, json_response
from vastkit.emulator._offer_columns import search_offers
from vastkit.emulator._routes import Call, Handler
from vastkit.emulator._state import State

__all__ = ["OfferEndpoints", "validate_create"]


class OfferEndpoints:
    """``search``, ``gpu_names``, ``create`` and ``create_bulk``.

    Args:
        state: The market.
        default_search_limit: Offers returned when a search has no ``limit``.
    """

    def __init__(self, state: State, default_search_limit: int) -> None:
        self.state = state
        self.default_search_limit = default_search_limit

    def endpoints(self) -> dict[str, Handler]:
        """Endpoint name -> handler."""
        return {
            "search": self.search,
            "gpu_names": self.gpu_names,
            "create": self.create,
            "create_bulk": self.create_bulk,
        }

    def find(self, query: Any) -> list[dict[str, Any]]:
        """Run an offer query and render the offers (no auth, limits or faults)."""
        return search_offers(self.state, query, self.default_search_limit)

    def search(self, call: Call) -> Response:
        """``POST|GET /api/v0/bundles/``, ``PUT /api/v0/search/asks/``."""
        request = call.request
        if request.method == "GET":
            query = request.json_param("q", {})
        else:
            body = request.json_body()
            query = body.get("q", body) if request.method == "PUT" else body
        return json_response(200, {"offers": self.find(query)})

    def gpu_names(self, call: Call) -> Response:
        """``GET /api/v0/gpu_names/unique/``."""
        names = sorted({m.gpu_name for m in self.state.machines})
        return json_response(200, {"gpu_names": names})

    def create(self, call: Call) -> Response:
        """``PUT /api/v0/asks/{id}/``."""
        ask_id = call.path_id
        body = call.request.json_body()
        validate_create(ask_id, body)
        status, answer = self.state.create(ask_id, body)
        return json_response(status, answer)

    def create_bulk(self, call: Call) -> Response:
        """``POST /api/v0/asks/bulk/``: one create per offer id, each answered in ``results``."""
        body = call.request.json_body()
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids:
            raise error(400, "invalid_args", "ids must be a non-empty list of offer ids")
        fields = {k: v for k, v in body.items() if k != "ids"}
        results = []
        for raw in ids:
            ask_id = int(raw)
            try:
                validate_create(ask_id, body)
                _, answer = self.state.create(ask_id, fields)
            except ApiError as exc:
                answer = exc.body
            results.append({"ask_id": ask_id, **answer})
        return json_response(200, {"success": True, "results": results})


def validate_create(ask_id: int, body: dict[str, Any]) -> None:
    """Check a create body the way the live API does.

    Raises:
        ApiError: 400 ``invalid_args`` (or ``invalid_price``) naming the first bad field.
    """

    def bad(message: str, code: str = "invalid_args") -> ApiError:
        return error(400, code, f"error 400/3467: Invalid args: {message}", ask_id=ask_id)

    image = body.get("image")
    if not image and not body.get("template_hash_id"):
        raise bad("image is required (or template_hash_id)")
    if image is not None and (not isinstance(image, str) or len(image) > 1024):
        raise bad("image must be a string of at most 1024 characters")
    _check_env(body.get("env", {}), bad)
    disk = body.get("disk", 8)
    try:
        disk_value = float(disk) if disk is not None else 8.0
    except (TypeError, ValueError):
        raise bad("disk must be a number") from None
    if disk_value < 8:
        raise bad("disk must be at least 8 GB")
    _check_price(body.get("price"), bad)
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 256):
        raise bad("label must be a string of at most 256 characters")
    size = sum(len(str(body.get(k) or "")) for k in ("onstart", "args_str"))
    size += sum(len(str(a)) for a in body.get("args") or [])
    if size > 4096:
        raise bad("args, args_str and onstart together exceed 4096 characters")
    if body.get("state") is not None or body.get("target_state") not in (
        None,
        "running",
        "stopped",
    ):
        raise bad("target_state must be running or stopped")


def _check_env(env: Any, bad: Callable[..., ApiError]) -> None:
    if env is not None and not isinstance(env, dict):
        raise bad("invalid env type: env must be a dict")
    total = 0
    for key, value in (env or {}).items():
        entry = len(str(key)) + len(str(value))
        if entry > 256:
            raise bad(f"env entry {key!r} is longer than 256 characters")
        total += entry
    if total > 32_768:
        raise bad("env is larger than 32768 characters")


def _check_price(price: Any, bad: Callable[..., ApiError]) -> None:
    if price is None:
        return
    try:
        price_value = float(price)
    except (TypeError, ValueError):
        raise bad("price must be a number", "invalid_price") from None
    if not 0.001 <= price_value <= 128:
        raise bad("price must be between 0.001 and 128", "invalid_price")
