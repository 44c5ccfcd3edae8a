"""Run at image build time, with bytecode writing on: a real load of a tiny Llama-architecture model
(random weights, a byte-level BPE tokenizer, saved and loaded back the way the huggingface provider
loads a model, then two greedy tokens). Every module such a load imports gets its bytecode compiled
into the image; the rest of the venv keeps none (it would cost ~270 MB). The job's root filesystem
is read-only, so without this every load compiles transformers' and torch's modules from source.
"""

from __future__ import annotations

import tempfile

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2TokenizerFast, LlamaConfig

with tempfile.TemporaryDirectory() as folder:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["The capital of France is Paris."] * 4,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]))
    GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(folder)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)

    AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.eos_token_id)
