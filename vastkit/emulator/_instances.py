"""Endpoints on rented instances: list (v1, paged), show, start/stop/label, destroy, bid, reboot,
recycle, and their bulk forms."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from vastkit.emulator._http import (
    Response,
    decode_token,
    encode_token,
    error,
    json_response,
)
from vastkit.emulator._query import QueryError, compare
from vastkit.emulator._render import render_instance
from vastkit.emulator._routes import Call, Caller, Handler
from vastkit.emulator._state import State

__all__ = ["STORED_COLUMNS", "InstanceEndpoints"]

STORED_COLUMNS = frozenset(
    {
        "id",
        "label",
        "actual_status",
        "intended_status",
        "cur_state",
        "next_state",
        "status_msg",
        "gpu_name",
        "verification",
        "machine_id",
        "host_id",
        "image_uuid",
        "image_runtype",
        "is_bid",
        "start_date",
        "end_date",
        "disk_space",
        "template_id",
        "template_hash_id",
        "bundle_id",
        "geolocation",
        "hosting_type",
        "public_ipaddr",
    }
)
"""Instance columns that ``select_filters``/``order_by`` accept (stored contract columns)."""

FILTER_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "notin")

_Order = list[tuple[str, bool]]
"""``(column, descending)`` sort keys."""
_RowCompare = Callable[[Mapping[str, Any], Mapping[str, Any]], int]


class InstanceEndpoints:
    """The instance endpoints over the market ``state``."""

    def __init__(self, state: State) -> None:
        self.state = state

    def endpoints(self) -> dict[str, Handler]:
        """Endpoint name -> handler."""
        return {
            "list": self.list_instances,
            "list_v0": self.list_v0,
            "instance_filters": self.filters,
            "show": self.show,
            "manage": self.manage,
            "manage_bulk": self.manage_bulk,
            "destroy": self.destroy,
            "destroy_bulk": self.destroy_bulk,
            "bid_price": self.bid_price,
            "reboot": self.reboot,
            "recycle": self.recycle,
        }

    def list_instances(self, call: Call) -> Response:
        """``GET /api/v1/instances/``: filtered, ordered, paged with ``after_token``."""
        request = call.request
        filters = request.json_param("select_filters", {})
        order_by = request.json_param("order_by", [{"col": "id", "dir": "asc"}])
        select_cols = request.json_param("select_cols", ["*"])
        limit = _page_size(request.query.get("limit", "25"))
        if not isinstance(filters, dict):
            raise error(400, "invalid_request", "Error in query parameters: select_filters")
        rendered = [render_instance(self.state, i) for i in self.state.instances.values()]
        rows = _filtered(rendered, filters)
        order = _sort_order(order_by)
        compare_rows: _RowCompare = functools.partial(_compare_rows, order)
        rows.sort(key=functools.cmp_to_key(compare_rows))
        label_counts: dict[str, int] = {}
        for row in rows:
            label = row["label"] or ""
            label_counts[label] = label_counts.get(label, 0) + 1
        total = len(rows)
        token = request.query.get("after_token")
        if token:
            rows = _after(rows, token, order, compare_rows)
        page = rows[:limit]
        next_token = None
        if len(rows) > limit:
            next_token = encode_token([page[-1][c] for c, _ in order])
        if select_cols != ["*"] and isinstance(select_cols, list):
            page = [{c: row.get(c) for c in select_cols} for row in page]
        return json_response(
            200,
            {
                "success": True,
                "instances_found": len(page),
                "total_instances": total,
                "label_counts": label_counts,
                "next_token": next_token,
                "instances": page,
            },
        )

    def filters(self, call: Call) -> Response:
        """``GET /api/v0/instances/filters/``: the distinct ``(actual_status, verification,
        gpu_name)`` combinations among the account's instances (the CLI's filter hints)."""
        seen: dict[tuple[Any, Any, Any], None] = {}
        for inst in self.state.instances.values():
            row = render_instance(self.state, inst)
            seen[(row["actual_status"], row["verification"], row["gpu_name"])] = None
        combos = [{"actual_status": a, "verification": v, "gpu_name": g} for a, v, g in seen]
        return json_response(200, {"filters": combos})

    def list_v0(self, call: Call) -> Response:
        """``GET /api/v0/instances/``: gone, as on the live API."""
        return json_response(
            410,
            {
                "success": False,
                "error": "deprecated_endpoint",
                "msg": "/api/v0/instances/ is deprecated. Use /api/v1/instances/ instead.",
            },
        )

    def show(self, call: Call) -> Response:
        """``GET /api/v0/instances/{id}/`` (``instances`` is null for an unknown id)."""
        inst = self.state.instances.get(call.path_id)
        body = render_instance(self.state, inst) if inst else None
        return json_response(200, {"instances": body})

    def manage(self, call: Call) -> Response:
        """``PUT /api/v0/instances/{id}/``: ``state`` (start/stop) and/or ``label``."""
        inst = self.state.instance(call.path_id)
        body = call.request.json_body()
        if call.auth.caller is Caller.INSTANCE and set(body) - {"state"}:
            raise error(403, "not_authorized", "An instance key may only start or stop.")
        if "label" in body:
            label = body["label"]
            if label is not None and (not isinstance(label, str) or len(label) > 1024):
                raise error(400, "label_too_long", "Label is too long (at most 1024).")
            inst.label = label
        if "state" in body:
            self.state.set_state(inst, str(body["state"]))
        if "label" not in body and "state" not in body:
            raise error(400, "invalid_args", "Nothing to change: give state or label.")
        return json_response(200, {"success": True})

    def manage_bulk(self, call: Call) -> Response:
        """``PUT /api/v0/instances/``: start or stop several (unknown ids are skipped)."""
        body = call.request.json_body()
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise error(400, "invalid_args", "ids must be a list")
        state = str(body.get("state"))
        for raw in ids:
            inst = self.state.instances.get(int(raw))
            if inst is not None:
                self.state.set_state(inst, state)
        return json_response(200, {"success": True})

    def destroy(self, call: Call) -> Response:
        """``DELETE /api/v0/instances/{id}/``."""
        inst = self.state.instance(call.path_id)
        self.state.destroy(inst)
        return json_response(200, {"success": True, "msg": f"Instance {inst.id} destroyed."})

    def destroy_bulk(self, call: Call) -> Response:
        """``DELETE /api/v0/instances/``: destroy several (unknown ids are skipped)."""
        body = call.request.json_body()
        ids = body.get("instance_ids")
        if not isinstance(ids, list):
            raise error(400, "invalid_args", "instance_ids must be a list")
        for raw in ids:
            inst = self.state.instances.get(int(raw))
            if inst is not None:
                self.state.destroy(inst)
        return json_response(200, {"success": True})

    def bid_price(self, call: Call) -> Response:
        """``PUT /api/v0/instances/bid_price/{id}/`` (no ``price``: a winning one)."""
        inst = self.state.instance(call.path_id)
        price = call.request.json_body().get("price")
        if price is not None:
            price = _bid_value(price, inst.machine.num_gpus)
        self.state.change_bid(inst, price)
        return json_response(200, {"success": True})

    def reboot(self, call: Call) -> Response:
        """``PUT /api/v0/instances/reboot/{id}/``."""
        inst = self.state.instance(call.path_id)
        self.state.reboot(inst)
        return json_response(200, {"success": True})

    def recycle(self, call: Call) -> Response:
        """``PUT /api/v0/instances/recycle/{id}/``."""
        inst = self.state.instances.get(call.path_id)
        if inst is None:
            raise error(404, "invalid_id", "Invalid instance id.")
        self.state.reboot(inst, recycle=True)
        return json_response(200, {"success": True})


def _page_size(raw: str) -> int:
    try:
        limit = int(raw)
    except ValueError:
        raise error(400, "invalid_request", "Error in query parameters: limit") from None
    return 5 if limit <= 0 else min(limit, 25)


def _filtered(rows: list[dict[str, Any]], filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows that pass every ``select_filters`` condition."""
    for column, condition in filters.items():
        if column not in STORED_COLUMNS:
            raise error(
                400,
                "invalid_request",
                f"Error in query parameters: {column} is not a valid search key",
            )
        if not isinstance(condition, dict):
            condition = {"eq": condition}
        for op, value in condition.items():
            if op not in FILTER_OPERATORS:
                raise error(
                    400, "invalid_request", f"Error in query parameters: unknown operator {op}"
                )
            try:
                rows = [r for r in rows if compare(r[column], op, value, column)]
            except QueryError as exc:
                raise error(400, "invalid_request", f"Error in query parameters: {exc}") from None
    return rows


def _sort_order(order_by: Any) -> _Order:
    """The ``order_by`` keys, with ``id`` last when it is not named (a total order)."""
    if not isinstance(order_by, list):
        raise error(400, "invalid_request", "Error in query parameters: order_by")
    order: _Order = []
    for item in order_by:
        column = item.get("col") if isinstance(item, dict) else None
        if column not in STORED_COLUMNS:
            raise error(
                400,
                "invalid_request",
                f"Error in query parameters: {column} is not a valid order column",
            )
        order.append((str(column), str(item.get("dir", "asc")).lower() == "desc"))
    if not any(c == "id" for c, _ in order):
        order.append(("id", False))
    return order


def _after(
    rows: list[dict[str, Any]], token: str, order: _Order, compare_rows: _RowCompare
) -> list[dict[str, Any]]:
    """The rows that sort after the row an ``after_token`` names."""
    marker = decode_token(token)
    if not isinstance(marker, list) or len(marker) != len(order):
        raise error(400, "invalid_token", "Invalid after_token")
    marker_row = {c: v for (c, _), v in zip(order, marker, strict=True)}
    return [r for r in rows if compare_rows(r, marker_row) > 0]


def _bid_value(price: Any, num_gpus: int) -> float:
    try:
        value = float(price)
    except (TypeError, ValueError):
        raise error(400, "invalid_price", "Please set a bid price >= 0.001.") from None
    if value < 0.001:
        raise error(400, "invalid_price", "Please set a bid price >= 0.001.")
    if value > 32.0 * num_gpus:
        raise error(400, "invalid_price", f"Bid price must be at most {32.0 * num_gpus}.")
    return value


def _compare_values(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)
    try:
        return int(a > b) - int(a < b)
    except TypeError:
        return (str(a) > str(b)) - (str(a) < str(b))


def _compare_rows(order: _Order, a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    for column, desc in order:
        result = _compare_values(a.get(column), b.get(column))
        if result:
            return -result if desc else result
    return 0
