"""Will it fit? The memory a LoRA training run and an inference job of a model need, and the settings that fit.

Pure: it reads a model's header files (``config.json``, the JSON headers of its ``.safetensors`` files, or a GGUF
header), never its weights, and takes the hardware as numbers (``orchestrator/doctor.py`` probes them). Every
figure is in bytes.

**Training** (LoRA with peft on every linear layer, AdamW, TRL's ``SFTTrainer``), for ``N = batch x seq`` tokens:

- ``weights``: every parameter in the load dtype (float32 on the CPU, the huggingface image's default; bfloat16 on
  a GPU). QLoRA: the linear layers as nf4 with double quantization (``0.5 + 1/64 + 4/(64*256)`` bytes a parameter:
  4-bit values, an 8-bit absmax per 64, a float32 per 256 absmax), the rest (embeddings, norms) in the compute
  dtype, plus one linear layer dequantized at a time.
- ``lora``: the adapter, ``r * (in + out)`` float32 parameters for each linear layer of each block.
- ``optimizer``: per trainable parameter, float32 gradients (4 bytes) and AdamW's two float32 moments (8 bytes).
- ``activations``: what autograd keeps for the backward pass. Without gradient checkpointing, per token and
  block, in elements of the compute dtype::

      12*h + 4*q + 2*kv + 5*i + 7*r + heads + 2

  with ``h`` the hidden size, ``q = heads * head_dim``, ``kv = kv_heads * head_dim``, ``i`` the MLP's intermediate
  size and ``r`` the LoRA rank: each RMSNorm's input (2h); each LoRA branch's dropped-out input and dropout mask
  (2 per linear layer: 5 reading h, o_proj reading q, down_proj reading i); the rotated query and the attention
  output (2q); the rotated key and the value (2kv); the gate and up projections and SiLU's output (3i); each
  LoRA branch's rank-r middle (7r); the fused attention's log-sum-exp (heads) and the norms' inverse RMS (2).
  Attention is the fused kernel (SDPA/flash: nothing of size seq x seq is kept). Counted for SmolLM2-135M by
  hooking autograd's saved tensors: 2.08 MB a token in float32, as the formula gives. With gradient
  checkpointing only each block's input is kept (``h`` a token per block, plus the final norm's), and one block
  is recomputed at a time during the backward pass: ``(blocks + 1) * h + per_block``.
- ``loss_head``: the working set of the language-model head. TRL computes the loss in tiles of
  ``min(N, 4096)`` tokens by ``min(vocab, 32768)`` logits and never holds the whole ``N x vocab`` matrix. Its
  backward pass on the CPU (torch operations over the tile) holds about 9 tile-sized float32 temporaries at once
  (the matmul buffer, the scaled logits, log-probabilities, probabilities, the gradient and the expression's
  intermediates), while every block's activations are still alive; on a GPU the Triton kernel works in place:
  2 tiles.
- ``allocator``: memory the allocator holds that no tensor uses. glibc's heap keeps freed blocks between steps:
  the resident set of a step is above the bytes its live tensors hold (sampled with ``mallinfo2`` at batch
  4 x 256: 3.2 MB a token live, 4.4 MB resident). Fitted to the cgroup peaks of LoRA runs of SmolLM2-135M on
  this project's 2-core machine (batch 1-4, 8 to 4096 tokens a batch): 30% of the activations and loss head
  without gradient checkpointing, 75% with it (many short-lived recomputed tensors), 10% for QLoRA (two runs).
  On a GPU, PyTorch's caching allocator: 15% (not measured here).
- ``framework``: the process before any of the above: Python, torch, transformers, peft, TRL, datasets, the
  tokenizer. Measured on the CPU as the cgroup peak of a LoRA run of SmolLM2-135M at batch 1 and 8 tokens minus
  the components above (see ``FRAMEWORK``); on a GPU, CUDA's context on the device (not measured here).

The sum is the job's peak as its container's cgroup counts it (the model file's pages included: a float32 base
is used through safetensors' memory map). A QLoRA run's cgroup also counts the page cache of the file it
quantized (clean pages the kernel reclaims under a limit): left out. The README gives measured peaks against
these figures.

**Inference**: the weights, the KV cache at ``seq`` tokens (``2 * blocks * kv * seq``), one forward pass's working
set over the prompt (``(4*h + 2*kv + 3*i) * seq`` elements of one block at a time) and the framework. GGUF files
(llama.cpp, the gguf provider; inference only): the tensor data as stored, an f16 KV cache, llama.cpp's compute
buffer for a 512-token batch and the runtime.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from providers.errors import ConfigurationError

Strategy = Literal["lora", "qlora"]
Device = Literal["cpu", "gpu"]

#: bytes of one element, by the dtype names of config.json and safetensors headers
DTYPE_BYTES = {"float32": 4, "F32": 4, "float16": 2, "F16": 2, "bfloat16": 2, "BF16": 2, "float64": 8, "F64": 8,
               "int8": 1, "I8": 1, "U8": 1, "uint8": 1, "I16": 2, "I32": 4, "I64": 8, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
ADAMW_BYTES = 4 + 8  # float32 gradient + two float32 moments, per trainable parameter
LORA_R = 8  # TrainConfig's default
LOSS_TILE_TOKENS = 4096  # TRL's chunked log-prob: tokens per tile (trl/kernels/chunked_logprob.py)
LOSS_TILE_VOCAB = 32768  # and logits per tile (trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE)
LOSS_TILES = {"cpu": 9, "gpu": 2}
#: the allocator's slack, as a share of activations + loss head, by device and mode (measured on the CPU: the
#: module docstring; PyTorch's caching allocator on a GPU: not measured here)
ALLOCATOR_SHARE = {("cpu", "lora"): 0.3, ("cpu", "checkpointing"): 0.75, ("cpu", "qlora"): 0.1,
                   ("gpu", "lora"): 0.15, ("gpu", "checkpointing"): 0.15, ("gpu", "qlora"): 0.15}
#: the process before the model: measured on the CPU (see the module docstring and the README); CUDA's context
#: on a GPU (not measured here: typically 0.3-0.6 GB)
FRAMEWORK = {("train", "cpu"): 480_000_000, ("infer", "cpu"): 335_000_000,
             ("train", "gpu"): 600_000_000, ("infer", "gpu"): 600_000_000}
GGUF_RUNTIME = 63_000_000  # Python, llama-cpp-python and its libraries (measured: `mf run -p gguf load`)
GGUF_BATCH = 512  # llama.cpp's n_batch: its compute buffer holds one batch
#: model types whose MLP is up-activation-down (two linear layers), not gated (three)
UNGATED_MLP = {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "phi", "falcon", "opt", "bloom", "mpt", "starcoder2"}
DEFAULT_MAX_SEQ = 2048
MIN_SEQ = 64
BATCH_SIZES = (8, 4, 2, 1)


@dataclass(frozen=True)
class Architecture:
    """A decoder's shape, from config.json or GGUF metadata."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    vocab_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool = True
    max_position_embeddings: int | None = None
    gated_mlp: bool = True
    attention_bias: bool = False
    qkv_bias: bool = False
    mlp_bias: bool = False

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one block: q, k, v, o, then the MLP's."""
        h, i = self.hidden_size, self.intermediate_size
        mlp = [(h, i), (h, i), (i, h)] if self.gated_mlp else [(h, i), (i, h)]
        return [(h, self.q_dim), (h, self.kv_dim), (h, self.kv_dim), (self.q_dim, h), *mlp]


def count_parameters(arch: Architecture) -> int:
    """The parameters of a Llama-style decoder (Llama, Mistral, Qwen2/3, SmolLM, ...) from its shape."""
    h = arch.hidden_size
    block = sum(i * o for i, o in arch.linear_shapes()) + 2 * h  # two RMSNorms
    if arch.attention_bias:
        block += arch.q_dim + 2 * arch.kv_dim + h
    elif arch.qkv_bias:
        block += arch.q_dim + 2 * arch.kv_dim
    if arch.mlp_bias:
        block += sum(o for _, o in arch.linear_shapes()[4:])
    embeddings = arch.vocab_size * h * (1 if arch.tie_word_embeddings else 2)
    return embeddings + arch.num_hidden_layers * block + h  # + the final norm


def linear_parameters(arch: Architecture) -> int:
    """The parameters in the blocks' linear layers (what QLoRA quantizes)."""
    return arch.num_hidden_layers * sum(i * o for i, o in arch.linear_shapes())


def lora_parameters(arch: Architecture, r: int = LORA_R) -> int:
    """LoRA on every linear layer of every block (``target_modules: all-linear``): ``r * (in + out)`` each."""
    return arch.num_hidden_layers * sum(r * (i + o) for i, o in arch.linear_shapes())


@dataclass(frozen=True)
class ModelInfo:
    path: str
    format: Literal["transformers", "gguf"]
    architecture: str
    parameters: int
    parameters_from: str  # "safetensors headers", "config.json" or "GGUF header"
    dtype: str
    weight_bytes: int  # the weights as stored
    arch: Architecture | None = None

    @property
    def inference_only(self) -> bool:
        return self.format == "gguf"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inference_only"] = self.inference_only
        return data


# -- reading a model ----------------------------------------------------------------------------------------------

def _not_a_model(path: Path, why: str) -> ConfigurationError:
    return ConfigurationError(f"{path} is not a model: {why}.",
                              "Pass a transformers checkpoint folder (config.json + safetensors) or a .gguf file.")


def read_model(path: Path) -> ModelInfo:
    """A checkpoint folder (config.json, safetensors), its config.json, or a GGUF file, sized from its headers."""
    if not path.exists():
        raise ConfigurationError(f"Model not found: {path}",
                                 "Pass a transformers checkpoint folder (config.json + safetensors) or a .gguf file.")
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file():
            if len(ggufs) == 1:
                return read_gguf_model(ggufs[0])
            raise _not_a_model(path, "no config.json" + (f" and {len(ggufs)} .gguf files (pass one)" if ggufs else ""))
        return read_transformers_model(path)
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigurationError(f"Cannot read {path}: {exc.strerror}.", "Check the file's permissions.") from None
    if magic == b"GGUF":
        return read_gguf_model(path)
    raise _not_a_model(path, "neither a GGUF file nor a checkpoint folder")


def architecture_from_config(config: dict[str, Any]) -> Architecture | None:
    """The decoder shape config.json describes (its text_config for a multimodal model), or None without one."""
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    try:
        hidden = int(text["hidden_size"])
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
        vocab = int(text.get("vocab_size") or config["vocab_size"])
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or hidden // heads)
        inter = int(text.get("intermediate_size") or 4 * hidden)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    max_pos = text.get("max_position_embeddings")
    tie = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    return Architecture(
        hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter, vocab_size=vocab,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, tie_word_embeddings=bool(tie),
        max_position_embeddings=int(max_pos) if isinstance(max_pos, int) else None,
        gated_mlp=model_type not in UNGATED_MLP,
        attention_bias=bool(text.get("attention_bias", False)),
        qkv_bias=model_type in ("qwen2", "qwen2_moe") or bool(text.get("qkv_bias", False)),
        mlp_bias=bool(text.get("mlp_bias", False)),
    )


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """A safetensors file's JSON header (8 bytes little-endian length, then the JSON): dtype, shape and offsets
    of every tensor. The weights are not read."""
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise _not_a_model(path, "a truncated safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000 or length > path.stat().st_size - 8:
            raise _not_a_model(path, "not a safetensors file (its header length is impossible)")
        try:
            header = json.loads(fh.read(length))
        except (ValueError, UnicodeDecodeError):
            raise _not_a_model(path, "not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise _not_a_model(path, "not a safetensors file")
    return header


def safetensors_size(files: list[Path]) -> tuple[int, int, str]:
    """Parameters, bytes and the most common dtype over safetensors files, from their headers."""
    params = size = 0
    by_dtype: dict[str, int] = {}
    for file in files:
        try:
            header = read_safetensors_header(file)
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                count = math.prod(int(d) for d in info["shape"])
                start, end = info["data_offsets"]
                params += count
                size += int(end) - int(start)
                by_dtype[str(info["dtype"])] = by_dtype.get(str(info["dtype"]), 0) + count
        except OSError as exc:
            raise _not_a_model(file, f"it cannot be read ({exc.strerror})") from None
        except (KeyError, TypeError, ValueError):
            raise _not_a_model(file, "its safetensors header does not list dtype, shape and data_offsets") from None
    dtype = max(by_dtype, key=lambda d: by_dtype[d]) if by_dtype else "float32"
    return params, size, dtype


_ST_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files: those its index names when sharded, else every one but an adapter's."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            return sorted({folder / name for name in weight_map.values()})
        except (OSError, ValueError, AttributeError):
            raise _not_a_model(folder, f"{index.name} is not readable JSON with a weight_map") from None
    return sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_"))


def read_transformers_model(folder: Path) -> ModelInfo:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise _not_a_model(folder, f"config.json is not readable JSON ({exc.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise _not_a_model(folder, "config.json is not a JSON object")
    arch = architecture_from_config(config)
    if arch is None:
        raise _not_a_model(folder, "its config.json does not describe a decoder-only language model (hidden_size, "
                                   "num_hidden_layers, num_attention_heads, vocab_size)")
    files = weight_files(folder)
    if files:
        params, size, st_dtype = safetensors_size(files)
        dtype, source = _ST_DTYPE_NAMES.get(st_dtype, st_dtype), "safetensors headers"
    else:
        params = count_parameters(arch)
        dtype, source = str(config.get("torch_dtype") or config.get("dtype") or "float32"), "config.json"
        size = params * DTYPE_BYTES.get(dtype, 4)
    names = config.get("architectures") or [config.get("model_type") or "unknown"]
    return ModelInfo(str(folder), "transformers", str(names[0]), params, source, dtype, size, arch)


def read_gguf_model(path: Path) -> ModelInfo:
    from providers.common.gguf_header import GGUFFormatError, read_header

    try:
        header = read_header(path)
    except (GGUFFormatError, OSError) as exc:
        raise _not_a_model(path, f"its GGUF header does not parse ({exc})") from None
    arch_name = str(header.get("general.architecture") or "unknown")

    def meta(key: str) -> Any:
        return header.get(f"{arch_name}.{key}")

    arch = None
    try:
        hidden, heads = int(meta("embedding_length")), int(meta("attention.head_count"))
        tokens = header.get("tokenizer.ggml.tokens")
        vocab = int(meta("vocab_size") or (len(tokens) if tokens is not None else 0))
        head_dim = int(meta("attention.key_length") or hidden // heads)
        arch = Architecture(
            hidden_size=hidden, num_hidden_layers=int(meta("block_count")),
            intermediate_size=int(meta("feed_forward_length") or 4 * hidden), vocab_size=vocab,
            num_attention_heads=heads, num_key_value_heads=int(meta("attention.head_count_kv") or heads),
            head_dim=head_dim, max_position_embeddings=int(meta("context_length") or 0) or None,
            tie_word_embeddings=not any(t.name == "output.weight" for t in header.tensors))
    except (TypeError, ValueError, ZeroDivisionError):
        arch = None
    weight_bytes = sum(t.n_bytes for t in header.tensors)
    dtype = header.file_type_name or "gguf"
    return ModelInfo(str(path), "gguf", arch_name, header.parameters, "GGUF header", dtype, weight_bytes, arch)


# -- estimates ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    strategy: Strategy = "lora"
    batch_size: int = 1
    max_seq_length: int = 512
    gradient_checkpointing: bool = False
    lora_r: int = LORA_R


@dataclass
class Estimate:
    """One job's memory, component by component, against a budget."""

    kind: Literal["training", "inference"]
    device: Device
    components: dict[str, int]
    budget: int
    settings: dict[str, Any] = field(default_factory=dict)
    supported: bool = True
    reason: str = ""

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def fits(self) -> bool:
        return self.supported and self.total <= self.budget

    def as_dict(self) -> dict[str, Any]:
        if not self.supported:
            return {"supported": False, "reason": self.reason, "fits": False, "budget": self.budget}
        return {**self.components, "total": self.total, "budget": self.budget, "fits": self.fits,
                "device": self.device, "settings": self.settings}


def _act_bytes(device: Device) -> int:
    """The compute dtype: float32 on the CPU (the huggingface provider loads float32 there), bfloat16 on a GPU."""
    return 4 if device == "cpu" else 2


def activation_bytes_per_token(arch: Architecture, r: int, elem: int, checkpointing: bool) -> int:
    """What autograd keeps per token, over all blocks (the formula of the module docstring)."""
    h, i = arch.hidden_size, arch.intermediate_size
    per_block = 12 * h + 4 * arch.q_dim + 2 * arch.kv_dim + 5 * i + 7 * r + arch.num_attention_heads + 2
    if checkpointing:
        return ((arch.num_hidden_layers + 1) * h + per_block) * elem
    return arch.num_hidden_layers * per_block * elem


def loss_head_bytes(arch: Architecture, batch: int, seq: int, device: Device) -> int:
    tokens = batch * max(seq - 1, 1)  # the last position predicts nothing
    return LOSS_TILES[device] * min(tokens, LOSS_TILE_TOKENS) * min(arch.vocab_size, LOSS_TILE_VOCAB) * 4


def training_estimate(model: ModelInfo, device: Device, budget: int, settings: Settings) -> Estimate:
    """The peak of a LoRA (or QLoRA) run of ``model`` with ``settings`` on ``device``."""
    if model.inference_only or model.arch is None:
        return Estimate("training", device, {}, budget, supported=False,
                        reason=f"{Path(model.path).name} is a GGUF file: inference only (the gguf provider); "
                               "train on the model's transformers checkpoint folder")
    arch, elem = model.arch, _act_bytes(device)
    checkpointing = settings.gradient_checkpointing or settings.strategy == "qlora"  # a 4-bit base always is
    if settings.strategy == "qlora":
        linear = linear_parameters(arch)
        largest = max(i * o for i, o in arch.linear_shapes())
        weights = int(linear * NF4_BYTES) + (model.parameters - linear) * elem + largest * elem
    else:
        weights = model.parameters * elem
    mode = "qlora" if settings.strategy == "qlora" else "checkpointing" if checkpointing else "lora"
    trainable = lora_parameters(arch, settings.lora_r)
    tokens = settings.batch_size * settings.max_seq_length
    activations = tokens * activation_bytes_per_token(arch, settings.lora_r, elem, checkpointing)
    head = loss_head_bytes(arch, settings.batch_size, settings.max_seq_length, device)
    components = {
        "weights": weights,
        "lora": trainable * 4,
        "optimizer": trainable * ADAMW_BYTES,
        "activations": activations,
        "loss_head": head,
        "allocator": int(ALLOCATOR_SHARE[(device, mode)] * (activations + head)),
        "framework": FRAMEWORK[("train", device)],
    }
    return Estimate("training", device, components, budget,
                    settings={**asdict(settings), "gradient_checkpointing": checkpointing})


def inference_estimate(model: ModelInfo, device: Device, budget: int, seq: int) -> Estimate:
    """The peak of generating with ``model`` at a context of ``seq`` tokens, one sequence."""
    arch = model.arch
    if model.format == "gguf":
        kv = 2 * arch.num_hidden_layers * arch.kv_dim * seq * 2 if arch else 0
        compute = GGUF_BATCH * (4 * arch.hidden_size + 2 * arch.intermediate_size) * 4 if arch else 0
        components = {"weights": model.weight_bytes, "kv_cache": kv, "activations": compute,
                      "framework": GGUF_RUNTIME}
        return Estimate("inference", device, components, budget, settings={"provider": "gguf", "n_ctx": seq})
    assert arch is not None
    elem = _act_bytes(device)
    components = {
        "weights": model.parameters * elem,
        "kv_cache": 2 * arch.num_hidden_layers * arch.kv_dim * seq * elem,
        "activations": (4 * arch.hidden_size + 2 * arch.kv_dim + 3 * arch.intermediate_size) * seq * elem
        + arch.vocab_size * 4,
        "framework": FRAMEWORK[("infer", device)],
    }
    return Estimate("inference", device, components, budget, settings={"max_seq_length": seq})


# -- recommendations ------------------------------------------------------------------------------------------------

@dataclass
class Recommendation:
    provider: str
    training: Estimate
    inference: Estimate
    #: the train config fields that give these settings (for `mf run ... train --config`)
    train_config: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        return self.training.settings

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"provider": self.provider}
        if self.training.supported:
            s = self.training.settings
            data.update({"strategy": s["strategy"], "batch_size": s["batch_size"],
                         "max_seq_length": s["max_seq_length"],
                         "gradient_checkpointing": s["gradient_checkpointing"], "train_config": self.train_config})
        else:
            data["max_seq_length"] = self.inference.settings.get("n_ctx", self.inference.settings.get("max_seq_length"))
        return data


def default_max_seq(model: ModelInfo) -> int:
    longest = model.arch.max_position_embeddings if model.arch else None
    return min(longest or DEFAULT_MAX_SEQ, DEFAULT_MAX_SEQ)


def _seq_lengths(start: int) -> list[int]:
    lengths = [start]
    while lengths[-1] // 2 >= MIN_SEQ:
        lengths.append(lengths[-1] // 2)
    return lengths


def recommend(model: ModelInfo, device: Device, budget: int, *, strategy: Strategy | None = None,
              batch_size: int | None = None, max_seq_length: int | None = None) -> Recommendation:
    """The settings a run of ``model`` would get on ``device`` with ``budget`` bytes; given ones are kept.

    Searched in this order, the first that fits wins: the longest ``max_seq_length`` (the model's context, at
    most 2048, halved down to 64), then LoRA before QLoRA (QLoRA only when LoRA does not fit but 4-bit weights
    do), then the largest batch size (8, 4, 2, 1), then gradient checkpointing off before on. When nothing
    fits, the smallest setting is returned, with ``fits`` false."""
    provider = "gguf" if model.format == "gguf" else "unsloth" if device == "gpu" else "huggingface"
    seqs = [max_seq_length] if max_seq_length else _seq_lengths(default_max_seq(model))
    inference = inference_estimate(model, device, budget, seqs[0])
    if model.inference_only:
        for seq in seqs:
            inference = inference_estimate(model, device, budget, seq)
            if inference.fits:
                break
        return Recommendation(provider, training_estimate(model, device, budget, Settings()), inference)
    strategies: tuple[Strategy, ...] = (strategy,) if strategy else ("lora", "qlora")
    batches = (batch_size,) if batch_size else BATCH_SIZES
    best: Estimate | None = None
    for seq in seqs:
        for strat in strategies:
            for batch in batches:
                for checkpointing in (False, True):
                    estimate = training_estimate(model, device, budget, Settings(strat, batch, seq, checkpointing))
                    best = estimate
                    if estimate.fits:
                        return _recommendation(provider, model, device, budget, estimate)
    assert best is not None
    return _recommendation(provider, model, device, budget, best)


def _recommendation(provider: str, model: ModelInfo, device: Device, budget: int, training: Estimate) -> Recommendation:
    s = training.settings
    inference = inference_estimate(model, device, budget, s["max_seq_length"])
    config = {"strategy": "qlora" if s["strategy"] == "qlora" else "sft", "batch_size": s["batch_size"],
              "max_seq_length": s["max_seq_length"], "gradient_checkpointing": s["gradient_checkpointing"]}
    return Recommendation(provider, training, inference, config)

