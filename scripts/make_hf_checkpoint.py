"""Make the test and benchmark model: the real SmolLM2-135M GGUF, dequantized by transformers in
the huggingface image and saved with save_pretrained as a Hugging Face checkpoint, cached in
.cache/test-models/ (made once).

usage: python scripts/make_hf_checkpoint.py   (prints the checkpoint's path)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / ".cache" / "test-models" / "smollm2-135m-hf"
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

_CONVERT = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
name = "SmolLM2-135M-Instruct.Q4_1.gguf"
model = AutoModelForCausalLM.from_pretrained("/models", gguf_file=name, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained("/models", gguf_file=name)
# transformers 5.23 marks a GGUF-loaded model as quantized and refuses to save it; its weights are
# already dequantized float32 tensors, so drop the marker and save them as safetensors.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained("/out/model", safe_serialization=True)
tokenizer.save_pretrained("/out/model")
"""


def ensure_hf_checkpoint(client, image: str, gguf: Path = GGUF) -> Path:
    """The checkpoint folder, made in ``image`` (the huggingface image) when it is not there yet."""
    if (CHECKPOINT / "config.json").is_file() and (CHECKPOINT / "model.safetensors").is_file():
        return CHECKPOINT
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CHECKPOINT.parent, prefix=".convert-"))
    work.chmod(0o777)  # the container's user writes here
    try:
        client.containers.run(
            image, entrypoint=["python", "-c", _CONVERT], network_mode="none", remove=True,
            user=f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000:1000",
            environment={"HOME": "/tmp", "HF_HUB_OFFLINE": "1"},  # noqa: S108 - the container's /tmp
            volumes={str(gguf.parent): {"bind": "/models", "mode": "ro"}, str(work): {"bind": "/out", "mode": "rw"}},
        )
        for path in [work, *work.rglob("*")]:
            os.lchown(path, os.getuid(), os.getgid())
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(CHECKPOINT, ignore_errors=True)
        (work / "model").rename(CHECKPOINT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CHECKPOINT


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from orchestrator import engine, images

    tag = images.ensure(images.image_spec("huggingface", "cpu"), lambda line: print(line, file=sys.stderr))
    print(ensure_hf_checkpoint(engine.client(), tag))
