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

from vastkit._shipping import signed_wheel_url
from vastkit._store import Store
from vastkit.errors import ConfigValueError, JobError
from vastkit.rundir import RunDir

__all__ = ["SIGNED_URL_MAX_S", "Keepalive"]

logger = logging.getLogger("vastkit.keepalive")

SIGNED_URL_MAX_S = 7 * 24 * 3600
"""The longest a presigned URL may live (S3's cap)."""


class Keepalive:
    """Rewrites ``<url>/<run_id>.keepalive`` until stopped.

    Args:
        url: A store folder (a local path, ``file://``, ``s3://``, ``gs://``).
        run_id: The rental's run id: the object's name.
        storage_options: fsspec options for ``url``.
        interval: Seconds between renewals (real time: it runs while the owner lives).
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
        interval: float,
        lifetime: float,
    ) -> None:
        self.name = f"{run_id}.keepalive"
        self.interval = interval
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
