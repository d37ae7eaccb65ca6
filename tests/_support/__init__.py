"""Shared test support, importable as ``tests._support`` from any test directory.

- :mod:`tests._support.api_factories`: realistic Vast response objects (offers, instances).
- :mod:`tests._support.processes`: subprocesses that never outlive their test (each in its own
  process group, killed whole at teardown), the ``processes`` fixture, and :class:`Lines` to read
  a child's output with a limit.
- :mod:`tests._support.waiting`: :func:`~tests._support.waiting.wait_until`, polling for a
  condition under a hang guard instead of sleeping for a guessed time.
- :mod:`tests._support.world`: a job's world in virtual time (:class:`HookedClock`, the
  :class:`FakeWorkers` that play the workers, test profiles and deadlines), shared by
  ``tests/jobs`` and ``tests/faults``.
- :mod:`tests._support.fault_matrix`: the fault matrix's accounting, a pytest plugin that prints
  its one summary line at the end of the session and fails the run if an invariant total is not
  zero, whatever order the tests ran in.

``tests/conftest.py`` registers the two plugins, so their fixtures and hooks apply to the whole
suite. The repository root must be importable: pytest puts it on ``sys.path`` (``pythonpath`` in
pyproject.toml), and :func:`tests._support.processes.child_env` puts it on a child's
``PYTHONPATH``.
"""
