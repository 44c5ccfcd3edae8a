"""`mf doctor`: check the engine, GPUs, disk, shared memory, the HF cache and the token; with --model, say whether
a model fits this machine for training and inference."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .options import json_option

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@click.command("doctor")
@click.option("--model", "model", default=None, metavar="PATH",
              help="Will it fit? A transformers checkpoint folder (config.json + safetensors) or a .gguf file: "
                   "whether training (LoRA) and inference fit this machine's GPU, else its RAM, with the estimate "
                   "broken down and the settings that fit. Reads headers only, never the weights.")
@click.option("--strategy", type=click.Choice(["lora", "qlora"]), default=None,
              help="With --model: estimate this strategy (default: LoRA, or QLoRA when only 4-bit weights fit).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, metavar="N",
              help="With --model: the training batch size (default: the largest of 8, 4, 2, 1 that fits).")
@click.option("--max-seq-length", type=click.IntRange(8, 131072), default=None, metavar="N",
              help="With --model: tokens per sequence, every sequence taken as this long (default: the model's "
                   "context, at most 2048, halved until it fits).")
@json_option
def doctor_command(model: str | None, strategy: str | None, batch_size: int | None, max_seq_length: int | None,
                   as_json: bool) -> None:
    """Check that this machine can run ModelForge jobs; each line says what to fix.

    With --model: will the model fit? One line for training and one for inference (on the GPU when the engine
    has one, else in RAM for the cpu images), each with its estimate broken down (weights, LoRA, optimizer,
    activations, the loss head, the allocator, the framework), then the settings it would pick. Exit 1 when
    neither fits, 0 otherwise; 2 for a path that is not a model.
    """
    if model is None:
        if strategy or batch_size or max_seq_length:
            raise click.UsageError("--strategy, --batch-size and --max-seq-length go with --model")
        run_checks_command(as_json)
        return
    from ..doctor import fit_report, probe_hardware

    report = fit_report(Path(model).expanduser(), probe_hardware(), strategy=strategy, batch_size=batch_size,
                        max_seq_length=max_seq_length)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_fit_report(report)
    estimate = report["estimate"]
    if not (estimate["training"]["fits"] or estimate["inference"]["fits"]):
        sys.exit(1)


def run_checks_command(as_json: bool) -> None:
    from rich.markup import escape

    from ..doctor import run_checks
    from ..render import stdout_console

    checks = run_checks()
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for c in checks:
            fix = f"  [dim]→ {escape(c.fix)}[/]" if c.fix else ""
            stdout_console.print(f"[{STYLE[c.status]}]{c.status:4}[/]  {c.name}: {escape(c.detail)}{fix}", soft_wrap=True)
    if any(c.status == "fail" for c in checks):
        sys.exit(1)


def size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if abs(n) >= 1e9 else f"{n / 1e6:.1f} MB"


#: what each component of an estimate is, for the breakdown
COMPONENTS = {
    "weights": "the base model's parameters",
    "lora": "the LoRA adapter (float32)",
    "optimizer": "float32 gradients + AdamW's two moments, per trainable parameter",
    "activations": "what autograd keeps for the backward pass",
    "loss_head": "the LM head's logit tiles (loss and its gradient)",
    "allocator": "freed memory the allocator keeps",
    "framework": "Python, torch and the libraries, before the model",
    "kv_cache": "keys and values of every block, at max_seq_length",
}
#: the same for an inference estimate, where they differ
INFERENCE_COMPONENTS = {
    "activations": "one forward pass's working set over the prompt",
    "framework": "Python and the runtime (torch, or llama.cpp for GGUF), before the model",
}


def _verdict(name: str, est: dict[str, Any], device: str) -> str:
    from rich.markup import escape

    where = "GPU memory" if device == "gpu" else "RAM"
    if not est.get("supported", True):
        return f"{name:13}[bold red]no[/]: {escape(est['reason'])}"
    s = est.get("settings", {})
    if name == "training":
        what = (f"{s['strategy']}, batch {s['batch_size']}, max_seq_length {s['max_seq_length']}, gradient "
                f"checkpointing {'on' if s['gradient_checkpointing'] else 'off'}")
    else:
        what = f"{'n_ctx' if 'n_ctx' in s else 'max_seq_length'} {s.get('n_ctx', s.get('max_seq_length'))}"
    word = "[green]fits[/]" if est["fits"] else "[bold red]does not fit[/]"
    return f"{name:13}{word}: {what}: {size(est['total'])} of {size(est['budget'])} {where}"


def print_fit_report(report: dict[str, Any]) -> None:
    from rich.markup import escape

    from ..render import stdout_console

    def line(text: str) -> None:
        stdout_console.print(text, soft_wrap=True, highlight=False)

    hw, model = report["hardware"], report["model"]
    gpus = "; ".join(f"GPU {g['index']} {g['name']} {size(g['memory_free'])} free of {size(g['memory_total'])}"
                     for g in hw["gpus"]) or "no GPU (the cpu images)"
    engine = f"; the engine sees {size(hw['engine_ram_total'])}" if hw["engine_ram_total"] else ""
    shm = f", /dev/shm {size(hw['shm_bytes'])}" if hw["shm_bytes"] else ""
    line(escape(f"{'hardware':13}{gpus}; {hw['cpus']} CPUs, RAM {size(hw['ram_total'])} "
                f"({size(hw['ram_available'])} available{engine}){shm}"))
    line(escape(f"{'disk':13}" + ", ".join(f"{size(free)} free ({where})" for where, free in hw["disk_free"].items())))
    line(escape(f"{'model':13}{model['architecture']}, {model['parameters']:,} parameters (from its "
                f"{model['parameters_from']}), {model['dtype']}, {size(model['weight_bytes'])}"
                + (", inference only" if model["inference_only"] else "")))
    for name in ("training", "inference"):
        est = report["estimate"][name]
        line(_verdict(name, est, hw["device"]))
        if not est.get("supported", True):
            continue
        for key, value in est.items():
            if key in COMPONENTS:
                what = INFERENCE_COMPONENTS.get(key, COMPONENTS[key]) if name == "inference" else COMPONENTS[key]
                line(escape(f"    {key:12} {size(value):>10}   {what}"))
        line(escape(f"    {'total':12} {size(est['total']):>10}"))
    rec = report["recommended"]
    picked = ", ".join(f"{k} {_word(v)}" for k, v in rec.items() if k != "train_config")
    line(escape(f"{'recommended':13}{picked}"))
    if rec.get("train_config"):
        line(escape(f"{'':13}--config job.json with {json.dumps({'train': rec['train_config']})}"))


def _word(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)
