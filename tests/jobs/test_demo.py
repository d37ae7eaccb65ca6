"""``vastkit demo`` (run_demo): moto S3, the emulator's process runner, a real PyTorch job."""

from __future__ import annotations

import io

import pytest

from vastkit.demo import run_demo


@pytest.mark.slow
@pytest.mark.s3
def test_the_demo_is_outbid_resumes_and_leaves_nothing_running() -> None:
    pytest.importorskip("moto.server")
    out = io.StringIO()
    outcome = run_demo(out=out, total_steps=30, step_seconds=0.05, preempt_at_step=10)
    text = out.getvalue()
    assert outcome.ok, text
    assert outcome.result.status == "succeeded"
    assert outcome.result.preemptions == 1
    assert outcome.leaked_instances == 0
    # the resumed step is the checkpoint the first attempt committed when it was stopped
    first = outcome.result.attempts[0]
    assert outcome.resumed_steps == (first.checkpoint_step,)
    assert "S3 (moto server" in text
    assert "was outbid" in text
    assert "resumed from checkpoint step" in text
    assert "Spend by job" in text  # the cost report
    assert "project 'demo' may spend $0.50" in text  # the budget it ran under
    assert "budget: project 'demo' spent $0.0" in text
    assert "demo OK" in text
    # The ledger's count agrees with the emulator's exact bill. A container's start is dated by
    # its uptime; a stop (the outbid, the end) is seen at the next poll (1 s in the demo), so on
    # a run this short each attempt may differ by one poll at its running rate, on top of 2 %.
    lag = sum(a.dph_total for a in outcome.result.attempts) * 1.0 / 3600
    assert abs(outcome.ledger_usd - outcome.bill_usd) <= 0.02 * outcome.bill_usd + lag, text
    assert "the ledger counted $" in text
