"""Adapters for the training code people already have (optional extras).

* :mod:`vastkit.integrations.lightning`: a PyTorch Lightning callback and ``CheckpointIO``
  plugin (``pip install "vastkit[lightning]"``);
* :mod:`vastkit.integrations.transformers`: a Hugging Face ``TrainerCallback``
  (``pip install "vastkit[transformers]"``).

Each saves through vastkit's :class:`~vastkit.checkpoint.CheckpointManager` (by default the
run's, ``vastkit.worker.context().checkpoints``), resumes from its latest committed checkpoint
and stops cleanly when :func:`vastkit.worker.should_stop` says the machine is going away.

``import vastkit`` never imports these modules, Lightning or transformers. Importing an adapter
whose library is missing raises :class:`MissingExtraError`, which names the extra to install.
"""

from __future__ import annotations

from vastkit.errors import VastkitError, install_hint

__all__ = ["MissingExtraError"]


class MissingExtraError(VastkitError, ImportError):
    """An integration's library is not installed (also an :class:`ImportError`).

    Attributes:
        extra: The vastkit extra that installs it (``"lightning"``).
    """

    def __init__(self, module: str, *, needs: str, extra: str) -> None:
        super().__init__(f"{module} needs {needs}: {install_hint(extra)}", name=module)
        self.extra = extra
