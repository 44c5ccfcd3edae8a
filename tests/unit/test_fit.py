"""`mf doctor --model`: the model read from its headers, the estimate's pure logic, the settings it picks, and the
command's exit codes (the hardware given, not probed). The estimate against real runs: tests/docker/test_fit_estimate.py."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import doctor, fit
from orchestrator.cli import cli
from providers.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / ".cache" / "test-models" / "smollm2-135m-hf"  # scripts/make_hf_checkpoint.py
#: SmolLM2-135M-Instruct's config.json, as the bundled checkpoint has it
SMOLLM2 = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True,
    "attention_bias": False, "mlp_bias": False, "dtype": "float32",
}
SMOLLM2_PARAMETERS = 134_515_008  # the bundled checkpoint's safetensors headers (and `mf run ... validate`) count


def _llama(**changes: Any) -> dict[str, Any]:
    return {**SMOLLM2, **changes}


#: Llama-2-7B's shape: what does not fit a 12 GiB GPU in bfloat16 with LoRA, and does with 4-bit weights
LLAMA_7B = _llama(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, head_dim=128, vocab_size=32000, max_position_embeddings=4096,
                  tie_word_embeddings=False, dtype="float16")


def _folder(tmp_path: Path, config: dict[str, Any], tensors: dict[str, tuple[str, list[int]]] | None = None) -> Path:
    """A checkpoint folder: config.json and, with ``tensors``, a safetensors file whose header lists them."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, (dtype, shape) in tensors.items():
            size = fit.DTYPE_BYTES[dtype]
            for dim in shape:
                size *= dim
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header).encode()
        with (folder / "model.safetensors").open("wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.truncate(8 + len(raw) + offset)  # sparse: the weights are never read
    return folder


def test_parameters_from_config_json_are_smollm2s_real_count(tmp_path: Path) -> None:
    model = fit.read_model(_folder(tmp_path, SMOLLM2))
    assert model.parameters_from == "config.json"
    assert model.parameters == SMOLLM2_PARAMETERS
    assert model.weight_bytes == SMOLLM2_PARAMETERS * 4 and not model.inference_only


@pytest.mark.skipif(not (BUNDLED / "model.safetensors").exists(), reason="scripts/make_hf_checkpoint.py makes it")
def test_the_bundled_checkpoints_safetensors_count_what_its_config_gives() -> None:
    model = fit.read_model(BUNDLED)
    assert model.parameters_from == "safetensors headers"
    assert model.arch is not None
    assert model.parameters == fit.count_parameters(model.arch) == SMOLLM2_PARAMETERS
    assert model.weight_bytes == (BUNDLED / "model.safetensors").stat().st_size - 8 - struct.unpack(
        "<Q", (BUNDLED / "model.safetensors").read_bytes()[:8])[0]


def test_safetensors_headers_are_counted_and_the_weights_never_read(tmp_path: Path) -> None:
    folder = _folder(tmp_path, SMOLLM2, {"a": ("BF16", [1000, 1000]), "b": ("BF16", [10]), "c": ("F32", [5, 2])})
    model = fit.read_model(folder)
    assert (model.parameters, model.weight_bytes, model.dtype) == (1_000_020, 2_000_060, "bfloat16")
    assert model.parameters_from == "safetensors headers"


def test_untied_heads_biases_and_gqa_are_counted(tmp_path: Path) -> None:
    # Qwen2-0.5B's shape (q/k/v biases, a tied head): 494,032,768 parameters
    qwen = _llama(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, head_dim=64)
    arch = fit.architecture_from_config(qwen)
    assert arch is not None and fit.count_parameters(arch) == 494_032_768
    llama = fit.architecture_from_config(LLAMA_7B)
    assert llama is not None and fit.count_parameters(llama) == 6_738_415_616  # Llama-2-7B


def test_activation_formula_is_what_autograd_kept_for_smollm2() -> None:
    arch = fit.architecture_from_config(SMOLLM2)
    assert arch is not None
    per_token = fit.activation_bytes_per_token(arch, 8, 4, checkpointing=False)
    # counted in the huggingface image by hooking autograd's saved tensors (unique storages, parameters left out)
    # over a LoRA forward pass of the real model at batch 1 x 256: 531,855,862 bytes, 2,077,562 a token
    assert per_token == pytest.approx(2_077_562, rel=0.005)
    # with gradient checkpointing: 31 hidden states a token (30 blocks' inputs and the final norm's), plus one
    # block recomputed at a time
    assert fit.activation_bytes_per_token(arch, 8, 4, checkpointing=True) == 31 * 576 * 4 + per_token // 30


def test_a_gguf_file_is_inference_only(demo_model: Path) -> None:
    model = fit.read_model(demo_model)
    assert model.format == "gguf" and model.inference_only and model.parameters == SMOLLM2_PARAMETERS
    rec = fit.recommend(model, "cpu", 8 * 10**9)
    assert rec.provider == "gguf"
    assert not rec.training.supported and not rec.training.fits and "inference only" in rec.training.reason
    assert rec.inference.fits and rec.inference.components["weights"] == model.weight_bytes
    assert rec.inference.settings["n_ctx"] == 2048
    assert rec.as_dict() == {"provider": "gguf", "max_seq_length": 2048}


def test_qlora_is_picked_when_lora_does_not_fit_the_budget(tmp_path: Path) -> None:
    model = fit.read_model(_folder(tmp_path, LLAMA_7B))
    gpu = 12 * 2**30
    lora = fit.training_estimate(model, "gpu", gpu, fit.Settings("lora", 1, 64, True))
    assert not lora.fits  # 13.5 GB of bfloat16 weights alone
    rec = fit.recommend(model, "gpu", gpu)
    s = rec.training.settings
    assert rec.provider == "unsloth" and rec.training.fits and s["strategy"] == "qlora"
    assert s["gradient_checkpointing"]  # a 4-bit base always trains with it
    assert rec.train_config["strategy"] == "qlora"
    # asked for LoRA, it stays LoRA and says it does not fit
    asked = fit.recommend(model, "gpu", gpu, strategy="lora")
    assert asked.training.settings["strategy"] == "lora" and not asked.training.fits


def test_the_largest_batch_and_context_that_fit_with_checkpointing_only_when_needed(tmp_path: Path) -> None:
    model = fit.read_model(_folder(tmp_path, SMOLLM2))
    roomy = fit.recommend(model, "cpu", 10**12).training.settings
    assert (roomy["batch_size"], roomy["max_seq_length"], roomy["gradient_checkpointing"]) == (8, 2048, False)
    # where batch 8 x 2048 only fits with checkpointing
    without = fit.training_estimate(model, "cpu", 0, fit.Settings("lora", 8, 2048, False)).total
    tight = fit.recommend(model, "cpu", without - 1).training.settings
    assert (tight["batch_size"], tight["max_seq_length"], tight["gradient_checkpointing"]) == (8, 2048, True)
    # a given batch and length are kept; the context shrinks only when not given
    kept = fit.recommend(model, "cpu", 10**12, batch_size=3, max_seq_length=100).training.settings
    assert (kept["batch_size"], kept["max_seq_length"]) == (3, 100)
    small = fit.recommend(model, "cpu", 2 * 10**9).training
    assert small.fits and small.settings["max_seq_length"] < 2048


def test_components_add_up_and_the_optimizer_is_adamw_in_float32(tmp_path: Path) -> None:
    model = fit.read_model(_folder(tmp_path, SMOLLM2))
    est = fit.training_estimate(model, "cpu", 10**12, fit.Settings("lora", 4, 256, False))
    lora = 8 * 30 * (1152 * 2 + 768 * 2 + 2112 * 3)  # r * (in + out) for q, k, v, o, gate, up, down
    assert est.components["lora"] == lora * 4 and est.components["optimizer"] == lora * 12
    assert est.components["weights"] == SMOLLM2_PARAMETERS * 4
    assert est.as_dict()["total"] == sum(est.components.values())


def test_not_a_model_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "mystery"}))
    for path in (tmp_path / "missing", tmp_path / "notes.txt", tmp_path / "empty", tmp_path / "odd"):
        with pytest.raises(ConfigurationError):
            fit.read_model(path)


def _hardware(budget: int) -> doctor.Hardware:
    return doctor.Hardware(gpus=[], ram_total=budget, ram_available=budget, engine_ram_total=None, cpus=2,
                           disk_free={}, shm_bytes=None)


@pytest.mark.parametrize("budget, code", [(10**12, 0), (10**8, 1)])
def test_exit_1_only_when_neither_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int, code: int) -> None:
    monkeypatch.setattr(doctor, "probe_hardware", lambda: _hardware(budget))
    folder = _folder(tmp_path, SMOLLM2)
    res = CliRunner().invoke(cli, ["doctor", "--model", str(folder), "--json"])
    assert res.exit_code == code, res.output
    report = json.loads(res.output)
    assert set(report) == {"hardware", "model", "estimate", "recommended"}
    training = report["estimate"]["training"]
    assert training["fits"] == (code == 0) and training["budget"] == budget
    assert {"weights", "lora", "optimizer", "activations", "framework", "total"} <= set(training)
    text = CliRunner().invoke(cli, ["doctor", "--model", str(folder), "--batch-size", "2", "--max-seq-length", "128"])
    assert text.exit_code == code
    assert text.output.splitlines()[3].startswith("training ") and "batch 2, max_seq_length 128" in text.output


@pytest.mark.parametrize("args", [["--model", "/no/such/model"], ["--model", "README.md"], ["--batch-size", "2"]])
def test_a_bad_model_or_option_is_one_line_and_exit_2(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "doctor", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("version", [1, 2])
def test_the_cgroup_memory_peak_file_of_a_container(tmp_path: Path, version: int) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    if version == 1:
        (proc / "42" / "cgroup").write_text("12:pids:/docker/abc\n9:memory:/docker/abc\n0::/\n")
        want = root / "memory" / "docker" / "abc" / "memory.max_usage_in_bytes"
    else:
        (proc / "42" / "cgroup").write_text("0::/system.slice/docker-abc.scope\n")
        want = root / "system.slice" / "docker-abc.scope" / "memory.peak"
    want.parent.mkdir(parents=True)
    want.write_text("123\n")
    assert doctor.cgroup_memory_peak_file(42, proc, root) == want
    assert doctor.cgroup_memory_peak_file(43, proc, root) is None
