"""What an Instance says when it is left, and the poll interval its waits follow."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from vastkit.clock import ManualClock
from vastkit.errors import ConfigError
from vastkit.instance import Instance, InstanceTimeouts

DESTROYED = re.compile(
    r"^vastkit: instance (?P<id>\d+) \(1x RTX 4090, machine \d+\) destroyed (?P<why>.+); "
    r"billing stopped; it cost \$(?P<cost>\d+\.\d{4}) at (?P<rate>\d+\.\d{3}) \$/h$"
)


@pytest.fixture
def no_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("VASTKIT_POLL_INTERVAL", "VASTKIT_CONFIG", "VASTKIT_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def destroyed_lines(err: str) -> list[re.Match[str]]:
    return [m for line in err.splitlines() if (m := DESTROYED.match(line))]


def test_leaving_the_block_says_what_was_destroyed_and_what_it_cost(
    make: Callable[..., Instance], clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with make(progress=None) as inst:
        clock.sleep(3600)  # an hour of use
        expected = inst.cost_so_far
        instance_id = inst.id
    err = capsys.readouterr().err
    found = destroyed_lines(err)
    assert len(found) == 1, err
    line = found[0]
    assert int(line["id"]) == instance_id
    assert line["why"] == "when the with block ended"
    assert float(line["cost"]) == pytest.approx(inst.dph, abs=0.01)  # about one hour's rate
    assert float(line["cost"]) == pytest.approx(expected, abs=0.0001)
    assert float(line["rate"]) == pytest.approx(inst.dph, abs=0.0005)
    assert inst.destroyed


def test_an_exception_leaving_the_block_is_named(
    make: Callable[..., Instance], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError, match="boom"), make(progress=None):
        raise RuntimeError("boom")
    found = destroyed_lines(capsys.readouterr().err)
    assert [m["why"] for m in found] == ["when an exception left the with block"]


def test_an_explicit_destroy_says_so_once(
    make: Callable[..., Instance], capsys: pytest.CaptureFixture[str]
) -> None:
    inst = make(progress=True)
    with inst:
        inst.destroy()
    found = destroyed_lines(capsys.readouterr().err)
    assert [m["why"] for m in found] == ["by destroy()"]  # once: leaving found it destroyed


def test_progress_false_prints_nothing(
    make: Callable[..., Instance], capsys: pytest.CaptureFixture[str]
) -> None:
    with make(progress=False):
        pass
    assert capsys.readouterr().err == ""


def test_in_a_notebook_the_line_is_printed_after_the_live_status(
    make: Callable[..., Instance],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rich.console

    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)  # what Jupyter's kernel is
    with make(progress=None):
        pass
    err = capsys.readouterr().err
    found = destroyed_lines(err)
    assert [m["why"] for m in found] == ["when the with block ended"]
    # no ipywidgets here: the notebook gets plain status lines, not rich's warning
    assert "vastkit: test-4090: searching offers\n" in err  # the status, written plain
    assert "ipywidgets" not in err


def test_waits_follow_the_configured_poll_interval(
    make: Callable[..., Instance],
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    no_setting: None,
) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "0.5")
    inst = make(timeouts=None)
    assert inst.timeouts == InstanceTimeouts(poll_interval=0.5)
    with inst:
        pass
    assert 0.5 in clock.slept
    assert 5.0 not in clock.slept  # the default interval


def test_the_config_file_sets_the_poll_interval_too(
    make: Callable[..., Instance], no_setting: None, tmp_path: Path
) -> None:
    (tmp_path / "vastkit.yaml").write_text("poll_interval_s: 2\n")
    assert make(timeouts=None).timeouts.poll_interval == 2.0


def test_without_a_setting_the_default_applies(
    make: Callable[..., Instance], no_setting: None
) -> None:
    assert make(timeouts=None).timeouts == InstanceTimeouts()


def test_given_timeouts_win(
    make: Callable[..., Instance], no_setting: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "0.5")
    mine = InstanceTimeouts(poll_interval=7)
    assert make(timeouts=mine).timeouts is mine


def test_a_bad_setting_is_a_config_error_when_made(
    make: Callable[..., Instance], no_setting: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "-2")
    with pytest.raises(ConfigError, match=r"VASTKIT_POLL_INTERVAL must be a positive number"):
        make(timeouts=None)
