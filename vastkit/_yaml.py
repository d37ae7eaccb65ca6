"""Load YAML configuration files with line numbers, for errors that point at the mistake.

PyYAML's ``safe_load`` forgets where each value came from. :func:`load_document` composes the
node tree itself, builds plain Python values from it and keeps a :class:`Document` that maps every
key path (``("profiles", "dev-test", "max_dph")``) to the 1-based line of that key, so a
:class:`~vastkit.errors.ConfigError` can name the file, the line and the key. Duplicate keys,
which PyYAML silently accepts (the last one wins), are an error here; merge keys
(``<<: *base``) are honoured.

Loading takes time proportional to the text: the composer does not recurse, nesting is limited
to :data:`MAX_DEPTH` levels, aliases may add at most :data:`ALIAS_EXPANSION_BUDGET` values
beyond the document's own (an alias bomb is refused at once), numbers must fit in 64 bits and a
document is at most :data:`MAX_DOCUMENT_CHARS` characters. The C parser (libyaml) is used when
PyYAML has it.

This module is private; the public loaders are :func:`vastkit.profiles.load_profiles` and
:func:`vastkit.budget.load_budgets`.
"""

from __future__ import annotations

import difflib
import gc
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import yaml

from vastkit.errors import ConfigError, ConfigTypeError, ConfigValueError

__all__ = [
    "ALIAS_EXPANSION_BUDGET",
    "MAX_DEPTH",
    "MAX_DOCUMENT_CHARS",
    "ConfigTypeError",
    "ConfigValueError",
    "Document",
    "did_you_mean",
    "load_document",
    "read_source",
]

KeyPath = tuple[str | int, ...]

MAX_DOCUMENT_CHARS: Final = 5_000_000
"""The largest configuration document read, in characters (bytes for a file): 5 MB."""
MAX_DEPTH: Final = 100
"""The deepest nesting of mappings and lists in a document."""
ALIAS_EXPANSION_BUDGET: Final = 10_000
"""How many values aliases (and merge keys) may add beyond those written in the document."""
_MAX_INT: Final = 2**63
_MAX_NUMBER_CHARS: Final = 64

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_INT_TAG: Final = "tag:yaml.org,2002:int"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"
_COLLECTION_TAGS: Final = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_INF_TEXT: Final = re.compile(r"[-+]?\.(?:inf|Inf|INF)")

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@attrs.frozen(kw_only=True)
class Document:
    """A loaded YAML document, or a part of one, and where each of its keys came from.

    Attributes:
        data: The plain Python value (dicts, lists, scalars) at :attr:`root`.
        path: The file name for messages (``"<string>"`` for text given directly).
        lines: Key path from the file's root to the 1-based line of that key (or list item).
        root: Where :attr:`data` sits in the file: ``()`` for the whole document, ``("profile",)``
            for the view :meth:`sub` returns. Key paths given to :meth:`line` and :meth:`error`
            are relative to it; messages name the full dotted key.
    """

    data: Any
    path: str
    lines: Mapping[KeyPath, int] = attrs.field(factory=dict)
    root: KeyPath = ()

    def sub(self, *key_path: str | int) -> Document:
        """Return a view of the value at ``key_path``, keeping the file, lines and full keys.

        An error raised through the view names the same file, the line of the key inside the
        subtree and the key's full dotted path (``profile.max_dph``), so a mapping written
        inline in a larger file (a job's ``profile:``) is reported where it was written.

        Args:
            *key_path: Keys (and list indices) from :attr:`root` to the subtree.

        Returns:
            The view; it shares :attr:`lines` with this document (nothing is copied).

        Raises:
            KeyError: A key is missing (``IndexError`` for a list index; ``TypeError`` when a
                step is not a container).
        """
        data = self.data
        for part in key_path:
            data = data[part]
        return Document(data=data, path=self.path, lines=self.lines, root=(*self.root, *key_path))

    def line(self, *key_path: str | int) -> int | None:
        """Return the line of ``key_path``, or of its nearest known parent.

        Args:
            *key_path: Keys from :attr:`root`, e.g. ``"profiles", "dev-test", "max_dph"``.

        Returns:
            The 1-based line, or None when nothing on the path is known (a dict given directly).
        """
        parts: KeyPath = (*self.root, *key_path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return None

    def error(self, message: str, *key_path: str | int) -> ConfigError:
        """Build a :class:`ConfigError` naming this document's file, the key's line and the key.

        Args:
            message: What is wrong, in words a user can act on.
            *key_path: Keys from :attr:`root` to the offending key.

        Returns:
            The error, to be raised by the caller.
        """
        parts = (*self.root, *key_path)
        dotted = ".".join(str(part) for part in parts) if parts else None
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


def _too_large(size: int) -> str:
    return (
        f"file too large: {size:,} bytes; configuration files may be at most "
        f"{MAX_DOCUMENT_CHARS:,} bytes (5 MB)"
    )


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
        ConfigError: The file cannot be read, or is larger than :data:`MAX_DOCUMENT_CHARS`
            bytes (refused before it is read).
    """
    is_path = isinstance(source, os.PathLike) or (
        "\n" not in source
        and len(source) < 4096
        and "\0" not in source
        and (source.endswith((".yaml", ".yml")) or (bool(source) and _is_file(source)))
    )
    if not is_path:
        return str(source), "<string>"
    path = Path(source)
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_CHARS and path.is_file():
            raise ConfigError(f"{what} {_too_large(size)}", path=str(path))
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} file not found", path=str(path)) from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} file: {exc}", path=str(path)) from exc


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def load_document(text: str, name: str) -> Document:
    """Parse YAML ``text`` into a :class:`Document`, in time proportional to its size.

    Args:
        text: The YAML text.
        name: The file name for messages.

    Returns:
        The document; an empty file gives ``data=None``.

    Raises:
        ConfigError: The text is longer than :data:`MAX_DOCUMENT_CHARS`, is not valid YAML,
            repeats a key, nests deeper than :data:`MAX_DEPTH`, expands aliases beyond
            :data:`ALIAS_EXPANSION_BUDGET`, or holds a number that does not fit in 64 bits (or
            a float literal that overflows). The error names the file, the line and the key.
    """
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ConfigError(_too_large(len(text)), path=name)
    loader: yaml.SafeLoader | None = None
    # The cyclic garbage collector would rescan the growing node tree again and again (a 1.6 MB
    # file composed 4x slower with it on); nothing built here is garbage until the load ends.
    collecting = gc.isenabled()
    gc.disable()
    try:
        loader = _Loader(text)
        node, count, sites = _compose(loader, name)
        lines: dict[KeyPath, int] = {}
        data = None
        if node is not None:
            builder = _Builder(loader, name, lines, sites, count + ALIAS_EXPANSION_BUDGET)
            data = builder.build(node, (), 0, None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"not valid YAML: {problem}", path=name, line=line) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=name) from exc
    finally:
        if loader is not None:
            loader.dispose()
        if collecting:
            gc.enable()
    return Document(data=data, path=name, lines=lines)


# --- composing: events to nodes, without recursion ----------------------------------------------


def _line(event_or_node: Any) -> int | None:
    mark = event_or_node.start_mark
    return None if mark is None else int(mark.line) + 1


_Sites = dict[tuple[int, int], int | None]
_AliasAt = tuple[int | None, KeyPath] | None


class _Open:
    """A collection being composed, and the key waiting for its value (mappings)."""

    __slots__ = ("key", "node")

    def __init__(self, node: yaml.CollectionNode) -> None:
        self.node = node
        self.key: yaml.Node | None = None


def _compose(loader: Any, name: str) -> tuple[yaml.Node | None, int, _Sites]:
    """Compose the single document of the stream.

    Returns the root node, how many nodes were composed, and where aliases were written:
    ``(id(parent), index in parent.value) -> line``.

    ``loader`` is a PyYAML loader (C or Python); its event methods are untyped in the stubs.
    """
    loader.get_event()  # StreamStartEvent
    if loader.check_event(yaml.StreamEndEvent):
        loader.get_event()
        return None, 0, {}
    loader.get_event()  # DocumentStartEvent
    anchors: dict[str, yaml.Node] = {}
    sites: dict[tuple[int, int], int | None] = {}
    stack: list[_Open] = []
    root: yaml.Node | None = None
    count = 0
    while not loader.check_event(yaml.DocumentEndEvent):
        event = loader.get_event()
        start: Any = event.start_mark
        end: Any = event.end_mark
        node: yaml.Node
        if isinstance(event, yaml.AliasEvent):
            found = anchors.get(str(event.anchor))
            if found is None:
                raise ConfigError(
                    f"not valid YAML: unknown alias '*{event.anchor}'", path=name, line=_line(event)
                )
            if any(entry.node is found for entry in stack):
                raise ConfigError(
                    f"alias '*{event.anchor}' refers to the value that contains it "
                    "(a recursive alias)",
                    path=name,
                    line=_line(event),
                )
            node = found
        elif isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(tag, event.value, start, end, style=event.style)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            is_seq = isinstance(event, yaml.SequenceStartEvent)
            kind: type[yaml.CollectionNode] = yaml.SequenceNode if is_seq else yaml.MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(kind, None, event.implicit)
            node = kind(tag, [], start, end, flow_style=event.flow_style)
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            closed = stack.pop()
            if closed.key is not None:  # pragma: no cover - the parser pairs keys and values
                raise ConfigError("not valid YAML: a key without a value", path=name)
            closed.node.end_mark = event.end_mark
            continue
        else:  # pragma: no cover - the parser emits nothing else inside a document
            raise ConfigError(f"not valid YAML: unexpected {type(event).__name__}", path=name)
        count += 1
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, yaml.AliasEvent):
            anchors[str(anchor)] = node
        if not stack:
            root = node
        else:
            top = stack[-1]
            if isinstance(event, yaml.AliasEvent):
                sites[(id(top.node), len(top.node.value))] = _line(event)
            if isinstance(top.node, yaml.SequenceNode):
                top.node.value.append(node)
            elif top.key is None:
                top.key = node
            else:
                top.node.value.append((top.key, node))
                top.key = None
        if isinstance(node, yaml.CollectionNode) and not isinstance(event, yaml.AliasEvent):
            stack.append(_Open(node))
            if len(stack) > MAX_DEPTH:
                raise ConfigError(
                    f"nested more than {MAX_DEPTH} levels deep", path=name, line=_line(event)
                )
    loader.get_event()  # DocumentEndEvent
    if not loader.check_event(yaml.StreamEndEvent):
        extra = loader.get_event()
        raise ConfigError(
            "expected a single YAML document, found another ('---')",
            path=name,
            line=_line(extra),
        )
    return root, count, sites


# --- building: nodes to plain values, with lines -----------------------------------------------


class _Builder:
    """Turns a composed node tree into plain values, counting every value it builds."""

    def __init__(
        self,
        loader: yaml.SafeLoader,
        name: str,
        lines: dict[KeyPath, int],
        sites: _Sites,
        budget: int,
    ) -> None:
        self.loader = loader
        self.sites = sites
        self.name = name
        self.lines = lines
        self.budget = budget
        self.built = 0

    def fail(self, message: str, line: int | None, path: KeyPath) -> ConfigError:
        key = ".".join(str(part) for part in path) if path else None
        return ConfigError(message, path=self.name, line=line, key=key)

    def build(
        self,
        node: yaml.Node,
        path: KeyPath,
        depth: int,
        alias_at: _AliasAt,
    ) -> Any:
        """Build ``node``; ``alias_at`` is the line and key of the outermost alias above it."""
        self.built += 1
        if self.built > self.budget:
            line, where = alias_at if alias_at is not None else (_line(node), path)
            raise self.fail(
                f"alias expansion budget exceeded: aliases would add more than "
                f"{ALIAS_EXPANSION_BUDGET:,} values to this document (an alias bomb?)",
                line,
                where,
            )
        if depth > MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} levels deep", _line(node), path)
        if isinstance(node, yaml.CollectionNode) and node.tag not in _COLLECTION_TAGS:
            raise self.fail(
                f"unsupported tag {node.tag!r}: use plain mappings and lists", _line(node), path
            )
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth, alias_at)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                child = (*path, index)
                self.lines[child] = _line(item) or 0
                here = self.alias_at(node, index, child, alias_at)
                items.append(self.build(item, child, depth + 1, here))
            return items
        return self.scalar(node, path)

    def mapping(
        self,
        node: yaml.MappingNode,
        path: KeyPath,
        depth: int,
        alias_at: _AliasAt,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            if key_node.tag == _MERGE_TAG:
                here = self.alias_at(node, index, path, alias_at)
                result.update(self.merge(value_node, path, depth, here))
        seen: dict[str, int | None] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.key(key_node, path)
            child = (*path, key)
            line = _line(key_node)
            if key in seen:
                raise self.fail(f"duplicate key '{key}' (first on line {seen[key]})", line, child)
            seen[key] = line
            self.lines[child] = line or 0
            result.pop(key, None)
            here = self.alias_at(node, index, child, alias_at)
            result[key] = self.build(value_node, child, depth + 1, here)
        return result

    def merge(
        self,
        value: yaml.Node,
        path: KeyPath,
        depth: int,
        alias_at: _AliasAt,
    ) -> dict[str, Any]:
        """The keys a ``<<`` merge key adds: earlier mappings in a list win over later ones."""
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        merged: dict[str, Any] = {}
        for index in reversed(range(len(sources))):
            source = sources[index]
            if not isinstance(source, yaml.MappingNode):
                raise self.fail(
                    "a merge key '<<' takes a mapping or a list of mappings (e.g. '<<: *base')",
                    _line(source),
                    path,
                )
            here = alias_at
            if isinstance(value, yaml.SequenceNode):
                here = self.alias_at(value, index, path, alias_at)
            merged.update(self.build(source, path, depth, here))
        return merged

    def alias_at(self, parent: yaml.Node, index: int, path: KeyPath, outer: _AliasAt) -> _AliasAt:
        """The outermost alias above ``parent.value[index]``: ``outer``, or this one if any."""
        if outer is not None:
            return outer
        line = self.sites.get((id(parent), index))
        return None if line is None else (line, path)

    def key(self, node: yaml.Node, path: KeyPath) -> str:
        if isinstance(node, yaml.ScalarNode):
            key = self.scalar(node, path)
            if key is None or isinstance(key, str | int | float | bool):
                return key if isinstance(key, str) else str(key)
        raise self.fail("keys must be plain words or numbers", _line(node), path)

    def scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        text = str(node.value)
        numeric = node.tag in (_INT_TAG, _FLOAT_TAG)
        if numeric and len(text) > _MAX_NUMBER_CHARS:
            raise self.fail(
                f"number too long ({len(text)} characters): numbers must fit in 64 bits",
                _line(node),
                path,
            )
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # PyYAML's constructors fail with bare builtins on odd scalars: an impossible date
            # (ValueError), an explicit '!!int' with nothing after it (IndexError).
            reason = str(exc) or type(exc).__name__
            raise self.fail(f"cannot read {text[:40]!r}: {reason}", _line(node), path) from exc
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _MAX_INT:
            raise self.fail(
                f"number out of range: {text[:40]} does not fit in 64 bits", _line(node), path
            )
        if isinstance(value, float) and math.isinf(value) and not _INF_TEXT.fullmatch(text):
            raise self.fail(
                f"number out of range: {text[:40]} is too large for a float", _line(node), path
            )
        return value
