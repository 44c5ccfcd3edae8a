"""Make the tiny test models: a randomly-initialised T5ForConditionalGeneration (tiny-t5) and a BERT
backbone saved as BertForMaskedLM (tiny-bert, which AutoModelForQuestionAnswering loads with only
qa_outputs new), each with a fast tokenizer whose vocabulary covers every word of the two small
memorisable datasets written by write_summarization_dataset and write_qa_dataset. They are made
offline in the huggingface image in a few seconds and cached in .cache/test-models/ (remade when
missing, or when the recipe or the datasets change).

usage: python scripts/make_tiny_models.py   (prints the models' paths)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import string
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / ".cache" / "test-models"
TINY_T5 = MODELS / "tiny-t5"
TINY_BERT = MODELS / "tiny-bert"
_STAMP = ".made-from"  # the recipe's fingerprint, so an edited dataset or recipe remakes the models

# (document, summary): short templated documents, each with a short lower-case summary.
SUMMARIZATION_PAIRS: list[tuple[str, str]] = [
    ("The meeting on Monday was moved to Friday because the room was booked. Everyone agreed.",
     "meeting moved to friday"),
    ("Heavy rain closed the main road into town on Tuesday. Drivers were told to use the old bridge.",
     "rain closed the main road"),
    ("The bakery on King Street will open a second shop next month. It will sell bread and cakes.",
     "bakery opens a second shop"),
    ("Our team won the football final by two goals on Saturday. The fans sang all night.",
     "team won the final"),
    ("The library will stay open until ten at night during exam week. Students asked for longer hours.",
     "library open late for exams"),
    ("A new train line will connect the airport to the city centre next year. Tickets will be cheap.",
     "new train line to the airport"),
]

# (context, question, answer): the answer is a span of the context, not always at its start.
QA_FACTS: list[tuple[str, str, str]] = [
    ("France is a country in Europe. Paris is the capital of France, and it is famous for its museums.",
     "What is the capital of France?", "Paris"),
    ("The Eiffel Tower stands in Paris. It was finished in 1889 and is made of iron.",
     "When was the Eiffel Tower finished?", "1889"),
    ("Many people climb in the Himalayas. Mount Everest is the highest mountain on Earth.",
     "What is the highest mountain on Earth?", "Mount Everest"),
    ("At sea level, water boils at 100 degrees Celsius. It freezes at zero degrees.",
     "At what temperature does water boil at sea level?", "100 degrees Celsius"),
    ("There are eight planets around the Sun. Jupiter is the largest planet in the solar system.",
     "Which planet is the largest in the solar system?", "Jupiter"),
    ("The Nile is the longest river in Africa. It flows north into the Mediterranean Sea.",
     "What is the longest river in Africa?", "The Nile"),
]


def write_summarization_dataset(path: str | Path, n: int = 24) -> Path:
    """A JSONL file of ``n`` records {"document", "summary"}: the six pairs above, repeated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            document, summary = SUMMARIZATION_PAIRS[i % len(SUMMARIZATION_PAIRS)]
            out.write(json.dumps({"document": document, "summary": summary}) + "\n")
    return path


def write_qa_dataset(path: str | Path, n: int = 24) -> Path:
    """A JSONL file of ``n`` SQuAD-style records {"context", "question", "answers": {"text": [t],
    "answer_start": [i]}} with context[i:i+len(t)] == t: the six facts above, repeated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            context, question, answer = QA_FACTS[i % len(QA_FACTS)]
            start = context.index(answer)
            record = {"context": context, "question": question, "answers": {"text": [answer], "answer_start": [start]}}
            out.write(json.dumps(record) + "\n")
    return path


def _texts() -> list[str]:
    return [text for pair in SUMMARIZATION_PAIRS for text in pair] + [text for fact in QA_FACTS for text in fact]


_FALLBACK_CHARS = string.ascii_letters + string.digits + string.punctuation


def _bert_vocab() -> list[str]:
    """BERT's basic tokenizer lower-cases and splits on whitespace and punctuation: those words, then
    single characters and their ## continuations so that any ASCII word still avoids [UNK]."""
    words = sorted({word for text in _texts() for word in re.findall(r"\w+|[^\w\s]", text.lower())})
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for token in [*words, *chars, *(f"##{c}" for c in string.ascii_lowercase + string.digits)]:
        if token not in vocab:
            vocab.append(token)
    return vocab


def _t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces (T5's layout: <pad>=0, </s>=1, <unk>=2): each whitespace-separated chunk's words
    and punctuation ('▁' before the first), scored above the single-character fallback pieces so that
    the words are kept whole."""
    pieces: set[str] = set()
    for text in _texts():
        for chunk in text.split():
            parts = re.findall(r"\w+|[^\w\s]", chunk)
            pieces.update(["\u2581" + parts[0], *parts[1:]])
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, -5.0) for piece in sorted(pieces)]
    seen = {piece for piece, _ in vocab}
    vocab += [(c, -10.0) for c in ["\u2581", *_FALLBACK_CHARS] if c not in seen]
    return vocab


_MAKE = """
import json, torch
from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast, T5Config, T5ForConditionalGeneration,
                          T5Tokenizer)
spec = json.load(open("/out/vocab.json"))
torch.manual_seed(0)

# transformers 5.23 builds T5's Unigram tokenizer from (piece, score) pairs, no sentencepiece file needed.
t5_tokenizer = T5Tokenizer(vocab=[tuple(p) for p in spec["t5"]], extra_ids=0, model_max_length=512)
t5_config = T5Config(
    vocab_size=len(t5_tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
    pad_token_id=t5_tokenizer.pad_token_id, eos_token_id=t5_tokenizer.eos_token_id,
    decoder_start_token_id=t5_tokenizer.pad_token_id, is_encoder_decoder=True,
)
t5 = T5ForConditionalGeneration(t5_config)
t5.generation_config.max_new_tokens = 16
t5.save_pretrained("/out/tiny-t5", safe_serialization=True)
t5_tokenizer.save_pretrained("/out/tiny-t5")

# Not BertTokenizerFast(vocab_file=...): 5.23 ignores that keyword and keeps only the special tokens.
bert_tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(spec["bert"])}, do_lower_case=True,
                                   model_max_length=512)
bert_config = BertConfig(
    vocab_size=len(bert_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=512, pad_token_id=bert_tokenizer.pad_token_id,
)
bert = BertForMaskedLM(bert_config)  # a pretrained BERT ships its masked-LM head; QA adds qa_outputs
bert.save_pretrained("/out/tiny-bert", safe_serialization=True)
bert_tokenizer.save_pretrained("/out/tiny-bert")
"""


def _spec() -> tuple[dict[str, Any], str]:
    spec: dict[str, Any] = {"t5": _t5_vocab(), "bert": _bert_vocab()}
    digest = hashlib.sha256((_MAKE + json.dumps(spec, sort_keys=True)).encode()).hexdigest()
    return spec, digest


def _ready(folder: Path, digest: str) -> bool:
    stamp = folder / _STAMP
    return (
        all((folder / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))
        and stamp.is_file()
        and stamp.read_text().strip() == digest
    )


def ensure_tiny_models(client: Any, image: str) -> dict[str, Path]:
    """{"t5": tiny-t5's folder, "bert": tiny-bert's folder}, made in ``image`` (the huggingface image)
    when either is missing or was made from another recipe."""
    spec, digest = _spec()
    folders = {"t5": TINY_T5, "bert": TINY_BERT}
    if all(_ready(folder, digest) for folder in folders.values()):
        return folders
    MODELS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=MODELS, prefix=".tiny-"))
    work.chmod(0o777)  # the container's user writes here
    try:
        (work / "vocab.json").write_text(json.dumps(spec))
        client.containers.run(
            image, entrypoint=["python", "-c", _MAKE], network_mode="none", remove=True,
            user=f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000:1000",
            environment={"HOME": "/tmp", "HF_HUB_OFFLINE": "1"},  # noqa: S108 - the container's /tmp
            volumes={str(work): {"bind": "/out", "mode": "rw"}},
        )
        for path in [work, *work.rglob("*")]:
            os.lchown(path, os.getuid(), os.getgid())
            path.chmod(0o755 if path.is_dir() else 0o644)
        for folder in folders.values():
            (work / folder.name / _STAMP).write_text(digest + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            (work / folder.name).rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folders


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from orchestrator import engine, images

    tag = images.ensure(images.image_spec("huggingface", "cpu"), lambda line: print(line, file=sys.stderr))
    for name, folder in ensure_tiny_models(engine.client(), tag).items():
        print(f"{name}\t{folder}")
