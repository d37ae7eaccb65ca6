"""Fixtures for the distributed worker tests: those of the worker tests (``run_dir``,
``tools``), reused by import."""

from __future__ import annotations

from tests.worker.conftest import run_dir, tools

__all__ = ["run_dir", "tools"]
