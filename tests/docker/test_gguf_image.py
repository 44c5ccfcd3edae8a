"""`mf run --provider gguf` end to end: the real image, the real SmolLM2 model, real containers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import images, recipes
from providers.contract import EXIT_CODES

from .conftest import JobWatcher, job_containers, mf, sigint_as_at_a_terminal

PROMPT = "The capital of France is"


def test_validate_reports_the_models_facts(gguf_image: str, demo_model: Path) -> None:
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model), "--json")
    assert res.code == 0, res.stderr
    assert [e["event"] for e in res.events][-1] == "result"
    result = res.last
    assert result["provider"] == "gguf" and result["action"] == "validate"
    assert result["architecture"] == "llama"
    assert result["parameters"] == 134_515_008
    assert result["quantization"] == "Q4_1"
    assert result["context_length"] == 8192
    assert result["vocab_size"] == 49152
    assert result["file_size"] == 98_362_432


def test_load_with_a_prompt_answers_paris(gguf_image: str, demo_model: Path) -> None:
    res = mf("run", "--provider", "gguf", "load", "--model", str(demo_model), "--prompt", PROMPT,
             "--max-new-tokens", "8", "--json")
    assert res.code == 0, res.stderr
    result = res.last
    assert "Paris" in result["text"]
    assert result["device"] == "cpu"
    assert 0 < result["new_tokens"] <= 8
    assert result["tokens_per_second"] > 0 and result["load_seconds"] > 0
    stages = [e["name"] for e in res.events if e["event"] == "stage"]
    assert stages == ["load", "generate"]


def test_human_output_is_a_table_on_stdout(gguf_image: str, demo_model: Path) -> None:
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model))
    assert res.code == 0, res.stderr
    assert "134,515,008" in res.stdout and "llama" in res.stdout
    assert "▸ validate" in res.stderr


def test_the_tokenizer_uses_the_models_vocabulary(gguf_image: str, demo_model: Path, docker_client: Any) -> None:
    code = (
        "from providers.builtin.gguf import GGUFProvider\n"
        "tok = GGUFProvider().load_tokenizer('/models/m.gguf')\n"
        f"ids = tok.encode({PROMPT!r}, add_special_tokens=False)\n"
        "print(tok.vocab_size, len(ids), repr(tok.decode(ids)))\n"
    )
    out = docker_client.containers.run(
        gguf_image, entrypoint=["python", "-c", code], network_mode="none", remove=True,
        volumes={str(demo_model): {"bind": "/models/m.gguf", "mode": "ro"}},
    ).decode()
    vocab, n_ids, text = out.strip().split(" ", 2)
    assert int(vocab) == 49152
    assert 3 <= int(n_ids) <= 8
    assert text == repr(PROMPT)


def test_output_folder_gets_a_result_owned_by_the_invoking_user(gguf_image: str, demo_model: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "run-1"
    res = mf("run", "--provider", "gguf", "validate", "--model", str(demo_model), "--output", str(out), "--json")
    assert res.code == 0, res.stderr
    result_file = out / "result.json"
    assert result_file.is_file()
    assert '"parameters": 134515008' in result_file.read_text()
    assert (result_file.stat().st_uid, out.stat().st_uid) == (os.getuid(), os.getuid())
    assert [p.name for p in out.iterdir()] == ["result.json"]


def test_a_truncated_model_fails_with_one_line_and_leaves_nothing(gguf_image: str, truncated_gguf: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = mf("run", "--provider", "gguf", "validate", "--model", str(truncated_gguf), "--output", str(out))
    assert res.code == EXIT_CODES["model_access"]
    errors = [line for line in res.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: truncated.gguf is truncated"), res.stderr
    assert errors[0].endswith("Download the file again.")
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert list(out.iterdir()) == []


def test_a_text_file_named_gguf_fails_as_json(gguf_image: str, text_named_gguf: Path) -> None:
    res = mf("run", "--provider", "gguf", "validate", "--model", str(text_named_gguf), "--json")
    assert res.code == EXIT_CODES["model_access"]
    assert res.last["event"] == "error" and res.last["kind"] == "model_access"
    assert "not a GGUF file" in res.last["message"]


def test_paths_with_spaces_and_symlinks_work(gguf_image: str, model_copy_with_spaces: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.gguf"
    link.symlink_to(model_copy_with_spaces)
    for model in (model_copy_with_spaces, link):
        res = mf("run", "--provider", "gguf", "validate", "--model", str(model), "--json")
        assert res.code == 0, res.stderr
        assert res.last["parameters"] == 134_515_008


def test_an_uncached_hub_reference_offline_says_to_add_online(gguf_image: str) -> None:
    res = mf("run", "--provider", "gguf", "validate", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:m.gguf")
    assert res.code == EXIT_CODES["model_access"]
    assert "not in the HF cache and this run is offline" in res.stderr
    assert "--online" in res.stderr


def test_a_cached_hub_reference_resolves_offline(gguf_image: str, demo_model: Path) -> None:
    """A file laid out the way huggingface_hub caches it is found with no network."""
    hf_home = Path(os.environ["HF_HOME"])
    repo = hf_home / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copyfile(demo_model, snapshot / "smollm2.gguf")
    res = mf("run", "--provider", "gguf", "validate", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:smollm2.gguf",
             "--json")
    assert res.code == 0, res.stderr
    assert res.last["parameters"] == 134_515_008


def test_the_job_container_is_locked_down(gguf_image: str, demo_model: Path, docker_client: Any) -> None:
    watcher = JobWatcher(docker_client)
    res = mf("run", "--provider", "gguf", "load", "--model", str(demo_model), "--prompt", PROMPT, "--json")
    seen = watcher.close()
    assert res.code == 0, res.stderr
    host = seen["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True and host["Init"] is True
    assert host["PidsLimit"] > 0
    assert "/tmp" in host["Tmpfs"]
    expected_user = "1000:1000" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert seen["Config"]["User"] == expected_user
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert mounts[f"/models/{demo_model.name}"]["ReadOnly"] is True
    assert mounts["/cache/huggingface"]["ReadOnly"] is True
    assert mounts["/job"]["ReadOnly"] is True
    assert "HF_HUB_OFFLINE=1" in seen["Config"]["Env"]
    assert not any(e.startswith("HF_TOKEN=") for e in seen["Config"]["Env"])


def test_ctrl_c_stops_the_job_and_removes_its_container(gguf_image: str, demo_model: Path,
                                                        docker_client: Any) -> None:
    # Greedy counting runs to the token limit (the context's 2048 tokens), so the job is surely still
    # generating when Ctrl-C comes: the test waits for the generate stage, not for a guessed delay.
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--provider", "gguf", "load", "--model", str(demo_model),
         "--prompt", "Count from 1 to 10000: 1, 2, 3, 4, 5,", "--max-new-tokens", "2000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_at_a_terminal,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "stage" and event["name"] == "generate":
            break
        assert event["event"] not in ("result", "error"), event
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_CODES["interrupted"], stderr
    error = json.loads(rest.splitlines()[-1])
    assert error["event"] == "error" and error["kind"] == "interrupted" and "Traceback" not in stderr
    assert time.monotonic() - started < 30  # the job's stop grace is 10 s
    assert job_containers(docker_client) == []


def test_a_code_change_rebuilds_only_the_last_layer(gguf_image: str, docker_client: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "providers"
    shutil.copytree(recipes.PROVIDERS_SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    with (src / "builtin" / "gguf.py").open("a") as fh:
        fh.write("\n# a one-line change\n")
    monkeypatch.setattr(recipes, "PROVIDERS_SRC", src)
    spec = images.image_spec("gguf", "cpu")
    assert spec.tag != gguf_image
    try:
        images.build(spec, lambda line: None)
        old = docker_client.images.get(gguf_image).attrs["RootFS"]["Layers"]
        new = docker_client.images.get(spec.tag).attrs["RootFS"]["Layers"]
        # only the code layer and its compiled bytecode change; everything below is reused
        assert len(new) == len(old)
        assert new[:-2] == old[:-2] and new[-2:] != old[-2:]
        # the compile stage is kept under its own tag, so `docker image prune` cannot take it
        builder = docker_client.images.get(spec.builder_tag)
        assert builder.labels["org.modelforge.kind"] == "builder"
        assert builder.labels["org.modelforge.build-hash"] == spec.build_hash
        assert images.build_cached(spec)
    finally:
        docker_client.images.remove(spec.tag, force=True)


def test_image_labels_record_what_is_inside(gguf_image: str, docker_client: Any) -> None:
    labels = docker_client.images.get(gguf_image).labels
    spec = images.image_spec("gguf", "cpu")
    assert labels["org.modelforge.provider"] == "gguf"
    assert labels["org.modelforge.flavour"] == "cpu"
    assert labels["org.modelforge.lock-hash"] == spec.lock_hash
    assert labels["org.modelforge.content-hash"].startswith(gguf_image.rsplit("-", 1)[1])
    assert "llama-cpp-python==0.3.36" in labels["org.modelforge.versions"]


def test_mf_providers_shows_the_built_image(gguf_image: str) -> None:
    res = mf("providers", "--json")
    assert res.code == 0, res.stderr
    import json

    rows = {row["name"]: row for row in json.loads(res.stdout)}
    assert rows["gguf"]["image"] == gguf_image and rows["gguf"]["built"] is True
    assert set(rows) >= {"gguf", "huggingface", "unsloth"}


@pytest.mark.parametrize("fixture", ["gguf_image", pytest.param("gguf_cuda_image", marks=pytest.mark.cuda_image)])
def test_llama_cpp_is_in_the_image_once(request: pytest.FixtureRequest, fixture: str, docker_client: Any) -> None:
    """One file per llama.cpp library: pip writes each versioned name as a copy (wheels hold no links),
    and llama.cpp's own install beside the package (site-packages/lib, include) is a second copy."""
    image = request.getfixturevalue(fixture)
    script = (
        "import json, os; site = '/opt/venv/lib/python3.11/site-packages'; lib = site + '/llama_cpp/lib';"
        "print(json.dumps({'lib': {n: os.readlink(f'{lib}/{n}') if os.path.islink(f'{lib}/{n}') else None "
        "for n in os.listdir(lib)}, 'beside': [d for d in ('lib', 'include') if os.path.exists(f'{site}/{d}')]}))"
    )
    out = docker_client.containers.run(image, ["/opt/venv/bin/python", "-c", script], entrypoint=[], remove=True,
                                       network_disabled=True)
    found = json.loads(out)
    assert found["beside"] == []
    for base in ("libllama", "libggml", "libggml-base", "libmtmd"):
        assert found["lib"][f"{base}.so"] == f"{base}.so.0", found["lib"]
        assert found["lib"][f"{base}.so.0"] is None  # the one real file, under its SONAME
        assert not [name for name in found["lib"] if name.startswith(f"{base}.so.0.")], found["lib"]
