"""Pure logic of the run history: metrics kept across a resume, the terminal curve."""

from __future__ import annotations

from pathlib import Path


def test_a_resumed_run_keeps_its_metrics_up_to_the_checkpoint(tmp_path: Path) -> None:
    import json

    from providers.runtime.training import keep_metrics_until

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    keep_metrics_until(path, 5)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_the_terminal_curve_puts_every_point_on_the_grid() -> None:
    from orchestrator.runs import curve

    lines = curve({"loss": [(s, 3.0 - s * 0.2) for s in range(1, 11)], "eval_loss": [(5, 2.2), (10, 1.3)]})
    body = "\n".join(lines[:-3])
    assert body.count("*") + body.count("o") == 12
    assert lines[-1].strip() == "* loss   o eval_loss" and "step 1" in lines[-2]
    assert curve({"loss": []}) == []
