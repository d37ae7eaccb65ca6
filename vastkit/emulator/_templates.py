"""Templates: a small built-in catalog, ``GET /api/v0/template/`` (``vastai search templates``)
and what a create with ``template_hash_id`` takes from its template.

The live catalog is large and user-made; the emulator carries a handful of well-known public
templates so that a create naming a ``template_hash_id`` can be checked against templates that
exist. A ``hash_id`` is content-based on Vast (reference section 7); here it is the MD5 of the
template's name and image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from vastkit.emulator._http import Response, error, json_response
from vastkit.emulator._query import QueryError, compare
from vastkit.emulator._routes import Call, Handler

__all__ = ["TEMPLATES", "TEMPLATE_COLUMNS", "TemplateEndpoints", "apply_template", "find_template"]

TEMPLATE_COLUMNS: Final = frozenset(
    {
        "creator_id",
        "created_at",
        "count_created",
        "default_tag",
        "docker_login_repo",
        "id",
        "image",
        "jup_direct",
        "hash_id",
        "private",
        "name",
        "recent_create_date",
        "recommended_disk_space",
        "recommended",
        "ssh_direct",
        "tag",
        "use_ssh",
    }
)
"""The columns ``select_filters`` may name (the official CLI's ``templates_fields``)."""


def _template(
    template_id: int,
    name: str,
    image: str,
    tag: str,
    *,
    runtype: str,
    disk: float,
    onstart: str | None = None,
    count: int = 0,
) -> dict[str, Any]:
    hash_id = hashlib.md5(f"{name}\n{image}:{tag}".encode()).hexdigest()
    return {
        "id": template_id,
        "hash_id": hash_id,
        "name": name,
        "image": image,
        "tag": tag,
        "default_tag": tag,
        "creator_id": 62897,
        "created_at": 1_700_000_000.0 + template_id,
        "recent_create_date": 1_760_000_000.0,
        "count_created": count,
        "docker_login_repo": None,
        "private": False,
        "recommended": True,
        "recommended_disk_space": disk,
        "runtype": runtype,
        "use_ssh": "ssh" in runtype,
        "ssh_direct": "ssh" in runtype,
        "jup_direct": "jupyter" in runtype,
        "env": "-p 22:22",
        "onstart": onstart,
        "args_str": None,
    }


TEMPLATES: Final[tuple[dict[str, Any], ...]] = (
    _template(
        180_001,
        "PyTorch (Vast)",
        "vastai/pytorch",
        "latest",
        runtype="ssh",
        disk=32,
        onstart="env >> /etc/environment",
        count=412_000,
    ),
    _template(
        180_002,
        "NVIDIA CUDA",
        "nvidia/cuda",
        "12.4.1-devel-ubuntu22.04",
        runtype="ssh",
        disk=16,
        count=210_000,
    ),
    _template(
        180_003,
        "Ubuntu 22.04 VM-like",
        "vastai/base-image",
        "cuda-12.4.1-auto",
        runtype="ssh",
        disk=16,
        count=98_000,
    ),
    _template(
        180_004,
        "Jupyter PyTorch",
        "pytorch/pytorch",
        "2.4.1-cuda12.4-cudnn9-runtime",
        runtype="jupyter",
        disk=32,
        count=150_000,
    ),
    _template(
        180_005,
        "vLLM",
        "vllm/vllm-openai",
        "latest",
        runtype="args",
        disk=64,
        count=41_000,
    ),
)
"""The built-in catalog (public templates; every ``hash_id`` here is accepted by create)."""


def find_template(hash_id: str) -> Mapping[str, Any] | None:
    """The built-in template with ``hash_id``, or None."""
    for template in TEMPLATES:
        if template["hash_id"] == hash_id:
            return template
    return None


def apply_template(body: dict[str, Any], ask_id: int) -> dict[str, Any]:
    """A create ``body`` with its template's fields filled in (request scalars win).

    Raises:
        ApiError: 404 ``invalid_args`` when ``template_hash_id`` names no template (inferred:
            the live error text is undocumented).
    """
    hash_id = body.get("template_hash_id")
    if not hash_id:
        return body
    template = find_template(str(hash_id))
    if template is None:
        raise error(
            404,
            "invalid_args",
            f"error 404: template_hash_id {hash_id} does not match any template.",
            ask_id=ask_id,
        )
    merged = dict(body)
    if not merged.get("image"):
        merged["image"] = f"{template['image']}:{template['tag']}"
    if not merged.get("onstart") and template["onstart"]:
        merged["onstart"] = template["onstart"]
    if not merged.get("runtype"):
        merged["runtype"] = template["runtype"]
    return merged


class TemplateEndpoints:
    """``GET /api/v0/template/``: the built-in catalog, filtered by ``select_filters``."""

    def endpoints(self) -> dict[str, Handler]:
        """Endpoint name -> handler."""
        return {"templates": self.search}

    def search(self, call: Call) -> Response:
        """Filter the catalog (columns of :data:`TEMPLATE_COLUMNS`, the offer operators)."""
        filters = call.request.json_param("select_filters", {})
        if not isinstance(filters, dict):
            raise error(400, "invalid_request", "select_filters must be a JSON object")
        rows = [dict(t) for t in TEMPLATES]
        for column, condition in filters.items():
            if column not in TEMPLATE_COLUMNS:
                raise error(400, "invalid_request", f"{column} is not a valid template column")
            if not isinstance(condition, dict):
                condition = {"eq": condition}
            for op, value in condition.items():
                try:
                    rows = [r for r in rows if compare(r[column], str(op), value, column)]
                except QueryError as exc:
                    raise error(400, "invalid_request", str(exc)) from None
        return json_response(
            200, {"success": True, "templates_found": len(rows), "templates": rows}
        )
