"""The pure half of the training recipes (providers/runtime/tasks/): which records each task and strategy
reads, which models it fits, the evaluation split, and the host's refusals, all before any container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.checks import check_training_fits
from orchestrator.cli import cli
from orchestrator.export import ExportRequest, resolve_inputs
from orchestrator.jobs import JobRequest
from providers.errors import ConfigurationError
from providers.runtime.tasks import RECIPES, recipe_for
from providers.runtime.train_config import TASK_STRATEGIES, TrainConfig, load_dataset_records
from providers.runtime.training import split_records
from providers.schemas import load_job_config


def _dataset(tmp_path: Path, *records: Any) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _model(tmp_path: Path, name: str, **config: Any) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


PAIR = {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Rome."}
SQUAD = {"context": "Paris is the capital of France.", "question": "What is the capital of France?",
         "answers": {"text": ["Paris"], "answer_start": [0]}}


def test_every_task_and_strategy_cell_has_a_recipe() -> None:
    for task, strategies in TASK_STRATEGIES.items():
        for strategy in strategies:
            recipe = recipe_for(TrainConfig.parse({"task": task, "strategy": strategy}))
            assert (recipe.task, recipe.objective) in RECIPES
            assert recipe.model_class == TrainConfig.parse({"task": task}).model_class


@pytest.mark.parametrize("train, message", [
    ({"task": "question-answering", "strategy": "dpo"}, "question-answering trains with sft, not dpo"),
    ({"task": "summarization", "strategy": "dpo"}, "summarization trains with sft or qlora, not dpo"),
    ({"strategy": "qlora", "quantization": "none"}, "qlora trains on a quantized base"),
    ({"task": "question-answering", "quantization": "nf4"}, "question-answering models train unquantized"),
    ({"strategy": "ppo"}, "strategy: Input should be 'sft', 'qlora', 'dpo' or 'rlhf'"),
])
def test_cells_that_make_no_sense_are_refused_in_one_line(train: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TrainConfig.parse(train)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_qlora_is_nf4_and_rlhf_is_dpo() -> None:
    assert TrainConfig.parse({"strategy": "qlora"}).quant == "nf4"
    assert TrainConfig.parse({"strategy": "dpo", "quantization": "nf4"}).quant == "nf4"
    assert TrainConfig.parse({"strategy": "sft"}).quant is None
    assert TrainConfig.parse({"strategy": "rlhf"}).objective == "dpo"


@pytest.mark.parametrize("train, records, message", [
    ({"strategy": "dpo"}, [PAIR, {"prompt": "p", "chosen": "a"}],
     "data.jsonl line 2: missing 'rejected' (DPO records are {\"prompt\", \"chosen\", \"rejected\"})"),
    ({"strategy": "dpo"}, [{**PAIR, "rejected": PAIR["chosen"]}], "line 1: 'chosen' and 'rejected' are the same"),
    ({"strategy": "dpo"}, [{"prompt": "p", "completion": "c"}], "line 1: text-generation with dpo records are"),
    ({"task": "question-answering"}, [SQUAD, {**SQUAD, "answers": {"text": ["Paris"], "answer_start": [3]}}],
     "data.jsonl line 2: answer_start 3 does not point at 'Paris' in the context (it points at 'is is')"),
    ({"task": "question-answering"}, [{**{k: SQUAD[k] for k in ("context", "question")}, "answer": "Lyon"}],
     "line 1: the answer 'Lyon' does not occur in the context"),
    ({"task": "summarization"}, [{"document": "d", "summary": ""}], "line 1: missing or empty 'summary'"),
    ({"task": "summarization"}, [{"text": "d"}], 'line 1: summarization records are {"document", "summary"}'),
])
def test_bad_records_name_their_line(tmp_path: Path, train: dict, records: list, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_dataset_records(_dataset(tmp_path, *records), TrainConfig.parse(train))
    assert message in str(info.value)


@pytest.mark.parametrize("train, record, fmt", [
    ({"strategy": "dpo"}, PAIR, "preference"),
    ({"strategy": "rlhf"}, {"prompt": [{"role": "user", "content": "Hi"}],
                            "chosen": [{"role": "assistant", "content": "Hello!"}],
                            "rejected": [{"role": "assistant", "content": "Go away."}]}, "preference_chat"),
    ({"task": "summarization"}, {"document": "a long text", "summary": "short"}, "document"),
    ({"task": "summarization"}, {"input": "a long text", "output": "short"}, "input"),
    ({"task": "summarization"}, {"article": "a long text", "summary": "short"}, "article"),
    ({"task": "question-answering"}, SQUAD, "squad"),
    ({"task": "question-answering"}, {"context": "Paris is big.", "question": "What is big?", "answer": "Paris"},
     "answer"),
])
def test_each_task_reads_its_record_shapes(tmp_path: Path, train: dict, record: dict, fmt: str) -> None:
    summary, records = load_dataset_records(_dataset(tmp_path, record, record), TrainConfig.parse(train))
    assert (summary.format, summary.records) == (fmt, 2)


def test_the_evaluation_split_is_seeded_and_never_empties_a_side() -> None:
    records = list(range(10))
    train, held = split_records(records, 0.2, seed=1)
    assert held is not None and len(held) == 2 and sorted(train + held) == records
    assert split_records(records, 0.2, seed=1) == (train, held)
    assert split_records(records, 0.0, seed=1) == (records, None)
    train, held = split_records([1, 2], 0.9, seed=1)
    assert len(train) == 1 and held is not None and len(held) == 1


def _request(model: Path, provider: str = "huggingface", **train: Any) -> JobRequest:
    return JobRequest(provider=provider, action="train", model=str(model), train=train)


@pytest.mark.parametrize("config, train, message", [
    ({"architectures": ["LlamaForCausalLM"]}, {"task": "question-answering"},
     "LlamaForCausalLM is not an encoder model: its weights do not load into a question-answering head"),
    ({"architectures": ["LlamaForCausalLM"]}, {"task": "summarization"},
     "LlamaForCausalLM is not an encoder-decoder model; summarization trains models such as T5 or BART"),
    ({"architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}, {},
     "T5ForConditionalGeneration is an encoder-decoder model; text-generation trains causal LMs"),
])
def test_a_task_that_does_not_fit_the_model_is_refused_on_the_host(tmp_path: Path, config: dict, train: dict,
                                                                    message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_training_fits(_request(_model(tmp_path, "m", **config), **train), TrainConfig.parse(train))
    assert message in str(info.value)


def test_fitting_models_pass(tmp_path: Path) -> None:
    bert = _model(tmp_path, "bert", architectures=["BertForMaskedLM"])
    t5 = _model(tmp_path, "t5", architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True)
    llama = _model(tmp_path, "llama", architectures=["LlamaForCausalLM"])
    for model, train in ((bert, {"task": "question-answering"}), (t5, {"task": "summarization", "strategy": "qlora"}),
                         (llama, {"strategy": "dpo"})):
        check_training_fits(_request(model, **train), TrainConfig.parse(train))


def test_qlora_of_a_gguf_file_and_unsloth_summaries_are_refused(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigurationError, match="m.gguf is a GGUF file"):
        check_training_fits(_request(gguf, strategy="qlora"), TrainConfig.parse({"strategy": "qlora"}))
    t5 = _model(tmp_path, "t5", architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True)
    with pytest.raises(ConfigurationError, match="The unsloth provider trains text-generation, not summarization"):
        check_training_fits(_request(t5, "unsloth", task="summarization"), TrainConfig.parse({"task": "summarization"}))


def test_export_refuses_a_question_answering_run_in_one_line(tmp_path: Path) -> None:
    base = _model(tmp_path, "bert", architectures=["BertForMaskedLM"])
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"task_type": "QUESTION_ANS"}))
    (run / "manifest.json").write_text(json.dumps({"model_source": str(base), "task": "question-answering"}))
    with pytest.raises(ConfigurationError) as info:
        resolve_inputs(ExportRequest(run=run, model=None, adapter=None, quantize=["q8_0"], output=tmp_path / "out"))
    assert "was trained for question-answering" in str(info.value) and "llama.cpp" in str(info.value)


def test_task_and_strategy_flags_go_with_train_only() -> None:
    res = CliRunner().invoke(cli, ["run", "-p", "huggingface", "load", "--model", "m", "--strategy", "dpo"])
    assert res.exit_code == 2 and "--task and --strategy go with the train action" in res.output


def test_a_modelforge_config_file_is_read_as_ours(tmp_path: Path) -> None:
    path = tmp_path / "mf.json"
    path.write_text(json.dumps({"task": "summarization", "model_name": "t5-small", "strategy": "sft",
                                "dataset": "docs.jsonl", "num_train_epochs": 2, "use_4bit": False,
                                "output_dir": "./x"}))
    config = load_job_config(path)
    train = TrainConfig.parse(config.train)
    assert (train.task, train.strategy, train.epochs) == ("summarization", "sft", 2)
    assert config.model_class == "AutoModelForSeq2SeqLM" and config.dataset == "docs.jsonl"
    assert any("num_train_epochs -> epochs = 2" in note for note in config.notes)
    assert any("output_dir" in note for note in config.notes)


def test_question_answering_windows_must_overlap_less_than_they_hold() -> None:
    with pytest.raises(ConfigurationError, match=r"doc_stride \(128\) must be smaller than max_seq_length \(64\)"):
        TrainConfig.parse({"task": "question-answering", "max_seq_length": 64})
    assert TrainConfig.parse({"task": "question-answering", "max_seq_length": 64, "doc_stride": 16}).doc_stride == 16
