"""The instance endpoints of :class:`vastkit.api.Client`: create, read, list, manage, logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from vastkit.api._converter import structure
from vastkit.api._responses import (
    all_pages,
    check_id,
    expect_field,
    raise_if_unsuccessful,
    unsuccessful_error,
)
from vastkit.api._transport import Transport
from vastkit.api.gone import Absence, offer_gone, read_absence, route_not_found
from vastkit.api.models import CreatedInstance, CreateInstanceRequest, InstanceInfo
from vastkit.clock import Clock
from vastkit.errors import (
    APIStatusError,
    APITimeoutError,
    GoneError,
    NotFoundError,
    ResponseValidationError,
)

__all__ = ["PAGE_LIMIT", "InstanceEndpoints"]

logger = logging.getLogger("vastkit.api")

PAGE_LIMIT: Final = 25
"""The v1 instance list's largest page."""


class InstanceEndpoints:
    """The instance calls of :class:`vastkit.api.Client` (a mixin: the client provides the
    transport and the clock)."""

    _transport: Transport
    _clock: Clock

    def create_instance(self, offer_id: int, request: CreateInstanceRequest) -> CreatedInstance:
        """Rent an offer (``PUT /api/v0/asks/{offer_id}/``).

        The rental is interruptible exactly when ``request.price`` is set (the bid in $/h);
        otherwise on-demand. The call is never retried once it may have reached the server:
        on a timeout or a dropped connection it raises, and the caller reconciles by label.

        Args:
            offer_id: The offer's ``id``.
            request: What to run.

        Returns:
            The new instance's id and its instance-scoped API key.

        Raises:
            NotFoundError, GoneError: Vast's ``no_such_ask``: the offer was taken or withdrawn.
            RouteNotFoundError: Any other 404 or 410 (an HTML page, "No such endpoint",
                ``deprecated_endpoint``): the route answered, not Vast's create handler.
            APIStatusError: The server refused. When Vast created a stopped instance anyway (a
                bid too low), the exception's ``new_contract`` is its id: destroy it, or it
                keeps billing storage.
            APIConnectionError: No answer; the instance may or may not exist.
        """
        check_id(offer_id, "offer id")
        payload: dict[str, Any] = {
            "client_id": "me",
            "image": request.image,
            "env": dict(request.env),
            "price": request.price,
            "disk": request.disk_gb,
            "label": request.label,
            "extra": None,
            "onstart": request.onstart,
            "image_login": request.image_login,
            "python_utf8": False,
            "lang_utf8": False,
            "use_jupyter_lab": False,
            "jupyter_dir": None,
            "force": False,
            "cancel_unavail": request.cancel_unavail,
            "template_hash_id": request.template_hash_id,
            "user": None,
        }
        if request.runtype is not None:
            payload["runtype"] = request.runtype
        if request.args is not None:
            payload["args"] = list(request.args)
        path = f"/api/v0/asks/{offer_id}/"
        try:
            body = self._transport.request(
                "PUT", path, endpoint="create_instance", json_body=payload, idempotent=False
            )
        except (NotFoundError, GoneError) as exc:
            if offer_gone(exc):
                raise
            error = route_not_found(exc, route=f"PUT {path}", redact=self._transport.redact)
            logger.warning("%s", error)
            raise error from exc
        raise_if_unsuccessful(self._transport, body, "PUT", path)
        created = structure(body, CreatedInstance)
        logger.info(
            "created instance %d from offer %d (%s)",
            created.id,
            offer_id,
            "interruptible" if request.interruptible else "on-demand",
        )
        return created

    def get_instance(self, instance_id: int) -> InstanceInfo | None:
        """One instance (``GET /api/v0/instances/{id}/``), or None when it does not exist.

        None only for Vast's own "no such instance" answers: ``{"instances": null}``, or a JSON
        error ``no_such_instance`` / ``invalid_id`` (see :mod:`vastkit.api.gone`).

        Raises:
            AuthenticationError: The key is wrong (Vast answers 404 ``auth_error`` here).
            RouteNotFoundError: A 404 or 410 from the route rather than about the instance (an
                HTML page, "No such endpoint", ``deprecated_endpoint``, a 404 without Vast's
                JSON error): the instance may well exist.
            ResponseValidationError: A list under ``instances`` without this instance.
            APIError: Anything else that went wrong.
        """
        check_id(instance_id)
        path = f"/api/v0/instances/{instance_id}/"
        try:
            body = self._transport.request(
                "GET", path, endpoint="show_instance", params={"owner": "me"}
            )
        except (NotFoundError, GoneError) as exc:
            self._require_gone(exc, "GET", path, unconfirmed=Absence.ROUTE)
            return None
        refused = unsuccessful_error(self._transport, body, "GET", path)
        if refused is not None:
            self._require_gone(refused, "GET", path, unconfirmed=Absence.ROUTE)
            return None
        raw = expect_field(body, "instances", (dict, list, type(None)))
        if raw is None:
            return None
        if isinstance(raw, list):
            matches = [
                item for item in raw if isinstance(item, dict) and item.get("id") == instance_id
            ]
            if not matches:
                raise ResponseValidationError(
                    f"GET {path} answered a list without instance {instance_id}",
                    errors=[f"no item with id {instance_id} @ $.instances"],
                    body=body,
                )
            raw = matches[0]
        return structure(raw, InstanceInfo, path="$.instances")

    def _require_gone(
        self, exc: APIStatusError, method: str, path: str, *, unconfirmed: Absence
    ) -> Absence:
        """What ``exc`` says is missing, when it says the instance may be gone; else raise.

        Args:
            exc: A 404 or 410, or the error of a 200 ``success: false`` answer.
            method: The method asked.
            path: The path asked.
            unconfirmed: How to read a 404 ``not_found`` on this route: :attr:`Absence.ROUTE`,
                or :attr:`Absence.UNCONFIRMED` where the caller confirms it.

        Returns:
            :attr:`Absence.INSTANCE`, or :attr:`Absence.UNCONFIRMED` when allowed.

        Raises:
            RouteNotFoundError: The answer is about the route, not the instance.
            APIStatusError: ``exc`` itself, when it is not about absence at all.
        """
        absence = read_absence(exc.status_code, exc.body)
        if absence is Absence.UNCONFIRMED:
            absence = unconfirmed
        if absence is None:
            raise exc
        if absence is Absence.ROUTE:
            route = f"{method} {path}"
            error = route_not_found(exc, route=route, redact=self._transport.redact)
            logger.warning("%s", error)
            raise error from exc
        return absence

    def list_instances(
        self,
        *,
        label: str | None = None,
        filters: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[InstanceInfo]:
        """Every instance of the account (``GET /api/v1/instances/``), all pages.

        Args:
            label: Only instances with exactly this label.
            filters: More ``select_filters`` on stored columns, e.g.
                ``{"actual_status": {"eq": "running"}}``.

        Returns:
            The instances, in id order.

        Raises:
            APIError: Anything that went wrong.
        """
        select: dict[str, Any] = {k: dict(v) for k, v in (filters or {}).items()}
        if label is not None:
            select["label"] = {"eq": label}
        params: dict[str, str | int | float] = {
            "select_filters": json.dumps(select),
            "limit": PAGE_LIMIT,
        }
        return all_pages(
            self._transport,
            "/api/v1/instances/",
            params,
            endpoint="list_instances",
            key="instances",
            cls=InstanceInfo,
            what="instance list",
        )

    def _manage(self, instance_id: int, payload: dict[str, Any]) -> None:
        check_id(instance_id)
        path = f"/api/v0/instances/{instance_id}/"
        body = self._transport.request("PUT", path, endpoint="manage_instance", json_body=payload)
        raise_if_unsuccessful(self._transport, body, "PUT", path)

    def stop_instance(self, instance_id: int) -> None:
        """Stop an instance (GPU billing stops; storage keeps billing).

        Raises:
            NotFoundError: No such instance.
            APIError: Anything else that went wrong.
        """
        self._manage(instance_id, {"state": "stopped"})

    def start_instance(self, instance_id: int) -> None:
        """Ask a stopped instance to run again (it may wait for its GPUs: "scheduling").

        Raises:
            NotFoundError: No such instance.
            APIError: Anything else that went wrong.
        """
        self._manage(instance_id, {"state": "running"})

    def label_instance(self, instance_id: int, label: str) -> None:
        """Set an instance's label.

        Raises:
            ValueError: The label is longer than 256 characters.
            APIError: Anything that went wrong.
        """
        if len(label) > 256:
            raise ValueError(f"label is {len(label)} characters; Vast allows 256")
        self._manage(instance_id, {"label": label})

    def change_bid(self, instance_id: int, price: float | None) -> None:
        """Change an interruptible instance's bid (``PUT /api/v0/instances/bid_price/{id}/``).

        Args:
            instance_id: The instance.
            price: The new bid in $/h for the whole instance; None lets Vast pick a winning bid.

        Raises:
            ValueError: A price below 0.001.
            APIError: Anything that went wrong.
        """
        check_id(instance_id)
        if price is not None and price < 0.001:
            raise ValueError(f"bid must be at least 0.001 $/h, got {price}")
        path = f"/api/v0/instances/bid_price/{instance_id}/"
        body = self._transport.request(
            "PUT", path, endpoint="change_bid", json_body={"client_id": "me", "price": price}
        )
        raise_if_unsuccessful(self._transport, body, "PUT", path)

    def destroy_instance(self, instance_id: int) -> bool:
        """Destroy an instance and stop all its billing. Irreversible.

        "Already gone" is read only from Vast's own answers about the instance (see
        :mod:`vastkit.api.gone`): a JSON error ``no_such_instance`` or ``invalid_id``; a 404
        ``not_found`` counts only once show-instance answers ``{"instances": null}``.

        Returns:
            True when this call destroyed it; False when it was already gone (not an error).
            A retried request whose first attempt did the work also reads as False.

        Raises:
            RouteNotFoundError: A 404 or 410 from the route rather than about the instance (an
                HTML page, "No such endpoint", ``deprecated_endpoint``, a 404 without Vast's
                JSON error, or ``not_found`` while show-instance still lists it): the instance
                may still exist and bill; keep it on the books and try again.
            APIError: Anything else that went wrong.
        """
        check_id(instance_id)
        path = f"/api/v0/instances/{instance_id}/"
        try:
            body = self._transport.request("DELETE", path, endpoint="destroy_instance")
            refused = unsuccessful_error(self._transport, body, "DELETE", path)
        except (NotFoundError, GoneError) as exc:
            refused = exc
        if refused is None:
            logger.info("destroyed instance %d", instance_id)
            return True
        absence = self._require_gone(refused, "DELETE", path, unconfirmed=Absence.UNCONFIRMED)
        if absence is Absence.UNCONFIRMED and self.get_instance(instance_id) is not None:
            raise route_not_found(
                refused,
                route=f"DELETE {path}",
                redact=self._transport.redact,
                detail=f"show-instance still lists instance {instance_id}",
            ) from refused
        logger.info("instance %d was already gone", instance_id)
        return False

    def instance_logs(
        self,
        instance_id: int,
        *,
        tail: int | None = None,
        timeout: float = 30.0,
        poll_interval: float = 0.5,
    ) -> str:
        """The container's log (``PUT /api/v0/instances/request_logs/{id}/``).

        Vast writes the log to a URL (``result_url``) a moment after the request; this polls
        that URL, without the API key, until it is ready.

        Args:
            instance_id: The instance.
            tail: Only the last ``tail`` lines.
            timeout: Seconds to wait for the log to appear.
            poll_interval: Seconds between polls.

        Returns:
            The log text.

        Raises:
            APITimeoutError: The log did not appear within ``timeout``.
            APIError: Anything else that went wrong.
        """
        check_id(instance_id)
        if tail is not None and tail <= 0:
            raise ValueError(f"tail must be positive, got {tail}")
        path = f"/api/v0/instances/request_logs/{instance_id}/"
        payload: dict[str, Any] = {} if tail is None else {"tail": str(tail)}
        body = self._transport.request("PUT", path, endpoint="request_logs", json_body=payload)
        raise_if_unsuccessful(self._transport, body, "PUT", path)
        result_url = expect_field(body, "result_url", str)
        if not result_url.startswith(("https://", "http://")):
            raise ResponseValidationError(
                "the log request returned an unusable result_url",
                errors=["not an http(s) URL @ $.result_url"],
                body=body,
            )
        deadline = self._clock.now() + timeout
        polls = 0
        while True:
            response = self._transport.get_plain(result_url, endpoint="instance_logs_result")
            polls += 1
            if response.status_code == 200:
                return response.text
            if response.status_code not in (403, 404):
                raise self._transport.status_error(response, "GET", "(log result_url)")
            if self._clock.now() + poll_interval > deadline:
                raise APITimeoutError(
                    f"the log of instance {instance_id} was not ready after {polls} polls "
                    f"({timeout:g}s)",
                    request=response.request,
                )
            self._clock.sleep(poll_interval)
