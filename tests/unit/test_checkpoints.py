"""Which checkpoint `--resume` continues from, and the disk space a run is checked for, on real files."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from providers.runtime.checkpoints import checkpoint_problem, estimate_training_bytes, last_complete_checkpoint
from providers.runtime.train_config import TrainConfig


def _safetensors(path: Path, n_floats: int) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_floats))


def _checkpoint(out: Path, step: int) -> Path:
    folder = out / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    _safetensors(folder / "adapter_model.safetensors", 1000)
    with zipfile.ZipFile(folder / "optimizer.pt", "w") as archive:
        archive.writestr("data.pkl", b"x" * 1000)
    return folder


def test_the_newest_whole_checkpoint_is_chosen(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        _checkpoint(tmp_path, step)
    skipped: list[str] = []
    assert last_complete_checkpoint(tmp_path, skipped).name == "checkpoint-6" and skipped == []


def test_a_cut_off_weights_file_is_skipped_with_the_reason(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        _checkpoint(tmp_path, step)
    weights = tmp_path / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    (tmp_path / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    skipped: list[str] = []
    assert last_complete_checkpoint(tmp_path, skipped).name == "checkpoint-2"
    assert skipped == ["checkpoint-6: adapter_model.safetensors is truncated (its tensors need 4075 bytes, the file "
                       "has 2000)", "checkpoint-4: trainer_state.json is missing"]


def test_other_kinds_of_damage(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path, 2)
    optimizer = folder / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:50])
    assert checkpoint_problem(folder) == "optimizer.pt is truncated or corrupt (BadZipFile)"
    folder = _checkpoint(tmp_path, 4)
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    assert checkpoint_problem(folder).startswith("adapter_model.safetensors is truncated (its header needs")
    folder = _checkpoint(tmp_path, 6)
    (folder / "trainer_state.json").write_text("{")
    assert checkpoint_problem(folder) == "trainer_state.json is unreadable"
    assert last_complete_checkpoint(tmp_path) is None


def test_a_save_in_progress_is_never_a_candidate(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 2)
    staged = tmp_path / "checkpoints" / ".staging" / "checkpoint-4"
    staged.mkdir(parents=True)
    (staged / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-2"


def test_the_space_estimate_counts_lora_weights_adam_and_saves(tmp_path: Path) -> None:
    # SmolLM2-135M's shape
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64}))
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 2_000_000)
    need = estimate_training_bytes(tmp_path, TrainConfig(lora_r=8, max_steps=100, save_steps=50), records=10)
    lora_params = 30 * 8 * (2 * 1152 + 2 * (576 + 192) + 3 * (576 + 1536))
    assert need["checkpoints"] == 3
    assert need["adapter"] == lora_params * 4 + 2_000_000 + 64 * 1024
    assert need["checkpoint"] == lora_params * 12 + 2_000_000 + 256 * 1024
    assert need["total"] == 3 * need["checkpoint"] + need["adapter"]
    by_epochs = estimate_training_bytes(tmp_path, TrainConfig(epochs=2, batch_size=4, save_steps=5), records=40)
    assert by_epochs["checkpoints"] == 20 // 5 + 1
