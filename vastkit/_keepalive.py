"""A rental's keepalive: renewed by the owning process, read by the host-side backstop.

A notebook that rents with ``vastkit.Instance(..., keepalive_s=600, keepalive_url=...)`` starts
a :class:`Keepalive`: a daemon thread that rewrites one small object in a store every
``keepalive_s / 4`` seconds while the process lives. The instance's backstop (its onstart, see
:func:`vastkit._bootstrap.backstop_onstart`) reads the object and destroys the instance with its
own per-instance key once the object has not changed for ``keepalive_s`` seconds: a kernel that
died, a laptop closed for good, a process killed with SIGKILL. Only a change counts, so the
owner's and the host's clocks need not agree.

The host reads a local folder with ``cat`` (a folder both can see: the emulator's, a shared
mount) and S3 or GCS through a presigned HTTPS GET URL, signed for the rental's max duration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from vastkit._bootstrap import backstop_onstart
from vastkit._shipping import signed_wheel_url
from vastkit._store import Store
from vastkit.errors import ConfigTypeError, ConfigValueError, JobError
from vastkit.profiles import GpuProfile
from vastkit.rundir import RunDir

__all__ = ["SIGNED_URL_MAX_S", "Keepalive", "RentalBackstop"]

logger = logging.getLogger("vastkit.keepalive")

SIGNED_URL_MAX_S = 7 * 24 * 3600
"""The longest a presigned URL may live (S3's cap)."""


class Keepalive:
    """Rewrites ``<url>/<run_id>.keepalive`` until stopped.

    Args:
        url: A store folder (a local path, ``file://``, ``s3://``, ``gs://``).
        run_id: The rental's run id: the object's name.
        storage_options: fsspec options for ``url``.
        keepalive_s: Seconds without a renewal after which the backstop destroys the instance;
            renewals come every quarter of it (real time: they run while the owner lives).
        lifetime: Seconds the host must be able to read the object (for a signed URL).

    Raises:
        ConfigValueError: The store is neither a local folder nor one that can sign URLs.
    """

    def __init__(
        self,
        url: str,
        run_id: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        keepalive_s: float,
        lifetime: float,
    ) -> None:
        self.name = f"{run_id}.keepalive"
        self.keepalive_s = keepalive_s
        self.interval = keepalive_s / 4
        self._store = Store(url, storage_options)
        self._path = self._store.path(self.name)
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._store.is_local:
            self.source = self._path
            """What the backstop reads: a local path or a signed HTTPS URL."""
        else:
            try:
                self.source = signed_wheel_url(
                    RunDir(url, storage_options),
                    self.name,
                    expiry=int(min(lifetime, SIGNED_URL_MAX_S)),
                )
            except JobError as exc:
                raise ConfigValueError.of(
                    "Instance",
                    "keepalive_url",
                    f"must be a local folder or a store that signs URLs (S3, GCS): "
                    f"{url!r} cannot sign one",
                    allowed="a local folder, s3://..., gs://...",
                ) from exc

    def renew(self) -> None:
        """Write a new value now (store errors are logged; the next renewal tries again)."""
        self._seq += 1
        data = f"{self._seq} {time.time():.3f}\n".encode()
        try:
            self._store.write(self._path, data, durable=False)
        except Exception as exc:
            logger.warning("could not renew the keepalive %s: %s", self.name, exc)

    def start(self) -> None:
        """Renew once now, then every ``interval`` seconds in a daemon thread."""
        if self._thread is not None:
            return
        self.renew()
        self._thread = threading.Thread(target=self._loop, name="vastkit-keepalive", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.renew()

    def stop(self) -> None:
        """Stop renewing (the instance is destroyed, or kept on purpose)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None


class RentalBackstop:
    """An ``Instance``'s backstop settings, checked before anything is rented, and its keepalive.

    Args:
        enabled: Put the backstop in the onstart at all.
        keepalive_s: Seconds without a renewal after which the backstop destroys the instance
            (``None``: only the max duration applies).
        url: The store folder of the keepalive object.
        storage_options: fsspec options for ``url``.

    Raises:
        ConfigValueError: ``keepalive_s`` under 1, without ``url``, or with ``enabled`` false.
        ConfigTypeError: ``keepalive_s`` is not a number.
    """

    def __init__(
        self,
        enabled: bool,
        keepalive_s: float | None,
        url: str | None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        _check_keepalive(enabled, keepalive_s, url)
        self.enabled = enabled
        self.keepalive_s = keepalive_s
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.keepalive: Keepalive | None = None

    def onstart(
        self, onstart: str | None, api_url: str, profile: GpuProfile, run_id: str
    ) -> str | None:
        """The onstart of a create: the backstop's lines (the keepalive renewed from now on),
        then ``onstart``. The max duration counts from now (the create), in Unix seconds."""
        if not self.enabled:
            return onstart
        source = None
        if self.keepalive_s is not None:
            if self.keepalive is None:
                self.keepalive = Keepalive(
                    self.url or "",
                    run_id,
                    storage_options=self.storage_options,
                    keepalive_s=self.keepalive_s,
                    lifetime=profile.max_duration_s + 3600.0,
                )
            self.keepalive.start()
            source = self.keepalive.source
        lines = backstop_onstart(
            api_url=api_url,
            until=time.time() + profile.max_duration_s,
            keepalive_s=self.keepalive_s,
            keepalive_source=source,
            tick=5.0 if self.keepalive_s is None else min(5.0, self.keepalive_s / 4),
        )
        return lines + (onstart or "")

    def stop(self) -> None:
        """Stop renewing the keepalive (the instance is destroyed or kept on purpose)."""
        if self.keepalive is not None:
            self.keepalive.stop()


def _check_keepalive(enabled: bool, keepalive_s: float | None, url: str | None) -> None:
    if keepalive_s is None:
        return
    if isinstance(keepalive_s, bool) or not isinstance(keepalive_s, int | float):
        raise ConfigTypeError.of(
            "Instance", "keepalive_s", f"must be a number of seconds (got {keepalive_s!r})"
        )
    if not keepalive_s >= 1:
        raise ConfigValueError.of(
            "Instance", "keepalive_s", f"must be 1 second or more (got {keepalive_s!r})"
        )
    if not enabled:
        raise ConfigValueError.of(
            "Instance", "keepalive_s", "needs backstop=True (the backstop enforces it)"
        )
    if not url:
        raise ConfigValueError.of(
            "Instance",
            "keepalive_s",
            "needs keepalive_url, a store folder the host can read the renewals from",
        )
