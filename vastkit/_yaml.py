"""Load YAML configuration files with line numbers, for errors that point at the mistake.

PyYAML's ``safe_load`` forgets where each value came from. :func:`load_document` composes the
node tree itself, builds plain Python values from it and keeps a :class:`Document` that maps every
key path (``("profiles", "dev-test", "max_dph")``) to the 1-based line of that key, so a
:class:`~vastkit.errors.ConfigError` can name the file, the line and the key. Duplicate keys,
which PyYAML silently accepts (the last one wins), are an error here.

This module is private; the public loaders are :func:`vastkit.profiles.load_profiles` and
:func:`vastkit.budget.load_budgets`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from vastkit.errors import ConfigError

__all__ = ["Document", "did_you_mean", "load_document", "read_source"]

KeyPath = tuple[str | int, ...]


@attrs.frozen(kw_only=True)
class Document:
    """A loaded YAML document and where each of its keys came from.

    Attributes:
        data: The plain Python value (dicts, lists, scalars).
        path: The file name for messages (``"<string>"`` for text given directly).
        lines: Key path to the 1-based line of that key (or of that list item).
    """

    data: Any
    path: str
    lines: Mapping[KeyPath, int] = attrs.field(factory=dict)

    def line(self, *key_path: str | int) -> int | None:
        """Return the line of ``key_path``, or of its nearest known parent.

        Args:
            *key_path: Keys from the root, e.g. ``"profiles", "dev-test", "max_dph"``.

        Returns:
            The 1-based line, or None when nothing on the path is known (a dict given directly).
        """
        parts: KeyPath = tuple(key_path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return None

    def error(self, message: str, *key_path: str | int) -> ConfigError:
        """Build a :class:`ConfigError` naming this document's file, the key's line and the key.

        Args:
            message: What is wrong, in words a user can act on.
            *key_path: Keys from the root to the offending key.

        Returns:
            The error, to be raised by the caller.
        """
        dotted = ".".join(str(part) for part in key_path) if key_path else None
        return ConfigError(message, path=self.path, line=self.line(*key_path), key=dotted)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the nearest of ``choices``, or ``""``.

    Args:
        word: The unknown word (a misspelt key or name).
        choices: The valid words.

    Returns:
        A suffix for an error message; empty when nothing is close.
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def read_source(source: str | os.PathLike[str], *, what: str) -> tuple[str, str]:
    """Read a configuration source that is either a file path or YAML text.

    A :class:`os.PathLike` is always a path. A string is a path when it has no line break and
    either ends in ``.yaml``/``.yml`` or names an existing file; otherwise it is YAML text.

    Args:
        source: A path or YAML text.
        what: What the file holds, for messages (``"GPU profiles"``).

    Returns:
        ``(text, name)`` where ``name`` is the path, or ``"<string>"`` for text.

    Raises:
        ConfigError: The file cannot be read.
    """
    is_path = isinstance(source, os.PathLike) or (
        "\n" not in source
        and (source.endswith((".yaml", ".yml")) or (bool(source) and Path(source).is_file()))
    )
    if not is_path:
        return str(source), "<string>"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} file not found", path=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} file: {exc}", path=str(path)) from exc


def load_document(text: str, name: str) -> Document:
    """Parse YAML ``text`` into a :class:`Document`.

    Args:
        text: The YAML text.
        name: The file name for messages.

    Returns:
        The document; an empty file gives ``data=None``.

    Raises:
        ConfigError: The text is not valid YAML, or a mapping repeats a key.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = None if node is None else _build(loader, node, (), lines, name)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"not valid YAML: {problem}", path=name, line=line) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=name) from exc
    finally:
        loader.dispose()
    return Document(data=data, path=name, lines=lines)


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    name: str,
) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(
                    "keys must be plain words or numbers",
                    path=name,
                    line=key_node.start_mark.line + 1,
                    key=".".join(str(p) for p in path) or None,
                )
            text_key = str(key) if not isinstance(key, str) else key
            child = (*path, text_key)
            if text_key in result:
                first = lines.get(child)
                raise ConfigError(
                    f"duplicate key '{text_key}' (first on line {first})",
                    path=name,
                    line=key_node.start_mark.line + 1,
                    key=".".join(str(p) for p in child),
                )
            lines[child] = key_node.start_mark.line + 1
            result[text_key] = _build(loader, value_node, child, lines, name)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            items.append(_build(loader, item, child, lines, name))
        return items
    return loader.construct_object(node, deep=True)
