"""Issue 16: the YAML loader never raises anything but a ``VastkitError``.

Raw random text, text from YAML's own punctuation, and valid profile files with random
character edits go through :func:`vastkit._yaml.load_document` (and the public profile and
budget loaders). Each example either loads or raises a :class:`~vastkit.errors.ConfigError`
with the file name; any other exception fails the property.

Example budget: :data:`RAW_EXAMPLES`, :data:`PUNCTUATION_EXAMPLES`, :data:`MUTATION_EXAMPLES`,
raised here on purpose (each example takes about a millisecond);
``--hypothesis-show-statistics`` prints the outcome counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from vastkit._yaml import Document, load_document
from vastkit.budget import load_budgets
from vastkit.errors import ConfigError
from vastkit.profiles import load_profiles

RAW_EXAMPLES = 500
PUNCTUATION_EXAMPLES = 500
MUTATION_EXAMPLES = 300

VALID = """\
profiles:
  dev-test: &base
    gpu_name: [RTX_4090, A100_SXM4]
    num_gpus: 1
    max_dph: 0.25
    reliability_min: 0.95
    max_duration_hours: 4
    extra_query: {cpu_ram: {gte: 32000}}
  big:
    <<: *base
    gpu_name: H100_SXM
    num_gpus: 8
    max_dph: 30
  other: {gpu_name: L40S, max_dph: 1.5, regions: [US, CA], disk_gb: 100}
"""

_PUNCTUATION = st.sampled_from(
    [
        *":-[]{},&*!|>'\"#%@`?<=~.\\ \n\t0123456789abexyz_",
        "<<", ".nan", ".inf", "!!int", "!!float", "!!binary", "!!set", "!!python/name:x", "---",
        "&a ", "*a", "9" * 30, "1e400", "2020-02-30", "\n  ", "\n    ", "\x00", "\ufeff", "é",
    ]
)  # fmt: skip


def attempt(call: Callable[[], Any]) -> tuple[Any, ConfigError | None]:
    """Run ``call``: its result, or the ConfigError it raised; any other exception escapes."""
    try:
        return call(), None
    except ConfigError as exc:
        return None, exc


def _load(text: str) -> str:
    """Load ``text``: ``"loaded"`` or ``"ConfigError"``; any other exception escapes."""
    doc, error = attempt(lambda: load_document(text, "fuzz.yaml"))
    if error is not None:
        assert error.path == "fuzz.yaml"
        assert error.line is None or error.line >= 1
        return "ConfigError"
    assert isinstance(doc, Document)
    return "loaded"


def _public_loaders(text: str) -> None:
    """The public loaders on the same text: a result or a ConfigError, nothing else."""
    attempt(lambda: load_profiles(text))
    attempt(lambda: load_budgets(text))


@settings(max_examples=RAW_EXAMPLES)
@given(st.text(max_size=400))
def test_raw_random_text_loads_or_is_a_config_error(text: str) -> None:
    event(_load(text))


@settings(max_examples=PUNCTUATION_EXAMPLES)
@given(st.lists(_PUNCTUATION, max_size=120).map("".join))
def test_yaml_punctuation_soup_loads_or_is_a_config_error(text: str) -> None:
    event(_load(text))
    _public_loaders("\n" + text)  # a leading newline: always text, never a path


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = VALID
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        piece: Any = draw(_PUNCTUATION)
        if action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif action == "replace":
            text = text[:at] + piece + text[at + 1 :]
        else:
            end = min(len(text), at + draw(st.integers(1, 80)))
            text = text[:end] + text[at:end] + text[end:]
    return text


def test_the_unmutated_file_loads() -> None:
    profiles = load_profiles(VALID)
    assert profiles["big"].extra_query == {"cpu_ram": {"gte": 32000}}
    assert profiles["big"].max_dph == 30


@settings(max_examples=MUTATION_EXAMPLES)
@given(_mutated())
def test_mutated_profile_files_load_or_are_config_errors(text: str) -> None:
    outcome = _load(text)
    profiles, error = attempt(lambda: load_profiles(text))
    event(f"{outcome}, then profiles: {'ConfigError' if error else 'loaded'}")
    if error is not None:
        assert error.path in ("<string>", None)
        return
    assert profiles
    for profile in profiles.values():
        assert profile.max_dph > 0
        assert profile.max_duration_hours > 0
