"""`mf ui` in a real browser (Debian's chromium, driven by Playwright): the runs table, a training run started
from the form and watched live to its end, a run cancelled from the jobs page, the form's bad input; and the
page's guards (token, cookie, CSRF, Host header, loopback only). Screenshots of each page are kept with the
test's temporary folder when it fails."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import SESSION, job_containers, mf
from .test_huggingface_image import write_dataset
from .test_serve import _addresses

pytestmark = pytest.mark.docker

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TRAIN = {"max_steps": "10", "batch_size": "2", "save_steps": "5", "logging_steps": "1", "max_seq_length": "64",
         "learning_rate": "0.001", "lora_r": "4"}


@pytest.fixture(scope="module")
def ui() -> Iterator[dict[str, Any]]:
    # the jobs it starts carry this session's label: the leftover check sees them
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "MF_SESSION": SESSION})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ModelForge at http://127.0.0.1:"), line + (proc.stderr.read() if proc.stderr else "")
    url = line.split(" at ", 1)[1].strip()
    base = url.split("/runs", 1)[0]
    yield {"url": url, "base": base, "port": int(base.rsplit(":", 1)[1]), "token": url.split("token=", 1)[1]}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the pages' screenshots go: the test's folder (kept when it fails), or MF_TEST_SCREENSHOTS."""
    return Path(os.environ.get("MF_TEST_SCREENSHOTS") or tmp_path / "screenshots")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (scripts/ensure-services.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _shot(page: Any, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _start_from_form(page: Any, base: str, **fields: str) -> None:
    """Open the training form, fill the fields given (the rest keep their defaults) and submit it."""
    page.goto(base + "/train")
    for name, value in fields.items():
        page.fill(f"#{name}", value)
    page.click("#start")


def _status(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback, a test
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_page_is_guarded(ui: dict[str, Any]) -> None:
    assert _status(ui["base"] + "/runs") == 403  # no token, no cookie
    assert _status(ui["base"] + "/runs?token=wrong") == 403
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(ui["url"], timeout=10) as response:  # the token becomes a cookie
        assert response.status == 200 and "/runs" in response.url and "token" not in response.url
    page = opener.open(ui["base"] + "/train", timeout=10).read().decode()
    assert 'name="csrf"' in page
    body = b"provider=huggingface&model=x&dataset=y&output=z"
    with pytest.raises(urllib.error.HTTPError) as info:  # a POST without the CSRF token
        opener.open(urllib.request.Request(ui["base"] + "/train", data=body), timeout=10)
    assert info.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as info:  # another Host (DNS rebinding)
        opener.open(urllib.request.Request(ui["base"] + "/runs", headers={"Host": "evil.example"}), timeout=10)
    assert info.value.code == 400
    for address in _addresses():
        with pytest.raises(OSError), socket.create_connection((address, ui["port"]), timeout=3):
            pass


def test_train_from_the_form_watch_it_live_and_cancel_from_jobs(ui: dict[str, Any], browser: Any, smollm2_hf: Path,
                                                                 tmp_path: Path, docker_client: Any, shots: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    tmp_path.chmod(0o755)
    work.chmod(0o755)
    dataset = write_dataset(work / "data.jsonl", n=24)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui["url"])
    assert page.locator("h1").inner_text() == "Runs" and page.locator("#runs").is_visible()
    _shot(page, shots, "runs")
    for path in ("/jobs", "/images", "/providers", "/doctor"):
        page.goto(ui["base"] + path)
        assert page.locator("h1").inner_text() == path.strip("/").capitalize()
        _shot(page, shots, path.strip("/"))

    # bad input: the CLI's line next to the field, nothing started
    before = len(job_containers(docker_client))
    _start_from_form(page, ui["base"], model=str(smollm2_hf), dataset=str(dataset), output=str(work / "run-bad"),
                     max_steps="ten")
    assert page.locator("#error-max_steps").inner_text().startswith("Error: train config: max_steps: Input should be "
                                                                    "a valid integer")
    _shot(page, shots, "train-error")
    assert len(job_containers(docker_client)) == before and not (work / "run-bad").exists()

    # a 10-step run from the form, watched live until it ends
    page.fill("#output", str(work / "run1"))
    for name, value in TRAIN.items():
        page.fill(f"#{name}", value)
    page.click("#start")
    page.wait_for_url("**/runs/*", timeout=600_000)
    run_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#events div", timeout=120_000)  # live events arrive
    _shot(page, shots, "run-live")
    page.wait_for_function("document.getElementById('status').textContent.trim() === 'finished'", timeout=600_000)
    assert page.locator("svg.curve circle.point.loss").count() == 10
    _shot(page, shots, "run-finished")
    rows = json.loads(mf("runs", "--json").stdout)
    [row] = [r for r in rows if r["id"] == run_id]
    assert row["status"] == "finished" and row["output"] == str(work / "run1")
    assert mf("jobs", "cancel", row["job"]).code == 0  # a detached job's container is kept until then
    assert next(r for r in json.loads(mf("runs", "--json").stdout) if r["id"] == run_id)["status"] == "finished"

    # a second run, cancelled from the jobs page: its container is gone, the run interrupted
    _start_from_form(page, ui["base"], model=str(smollm2_hf), dataset=str(dataset), output=str(work / "run2"),
                     max_steps="500")
    page.wait_for_url("**/runs/*", timeout=600_000)
    second = page.url.rsplit("/", 1)[1]
    job = next(r for r in json.loads(mf("runs", "--json").stdout) if r["id"] == second)["job"]
    page.goto(ui["base"] + "/jobs")
    page.locator(f'tr[data-job="{job}"] button').click()
    page.wait_for_url("**/jobs?m=*", timeout=300_000)
    assert f"{job} cancelled" in page.locator(".message").inner_text()
    _shot(page, shots, "jobs-cancelled")
    assert not [c for c in job_containers(docker_client) if c.name == job.removeprefix("docker-")]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = next(r for r in json.loads(mf("runs", "--json").stdout) if r["id"] == second)["status"]
        if status != "running":
            break
        time.sleep(1)
    assert status == "interrupted"
    page.close()


def test_the_images_page_gives_sboms_and_verifies(ui: dict[str, Any], gguf_image: str) -> None:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    opener.open(ui["url"], timeout=10).read()
    page = opener.open(ui["base"] + "/images", timeout=30).read().decode()
    assert gguf_image in page and 'href="/images/gguf/cpu/sbom"' in page
    sbom = json.loads(opener.open(ui["base"] + "/images/gguf/cpu/sbom", timeout=120).read())
    assert sbom["bomFormat"] == "CycloneDX" and any(c.get("name") == "llama-cpp-python" for c in sbom["components"])
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    # the page's mf runs without a registry here: verify says so, as the CLI does, in one line
    answer = opener.open(urllib.request.Request(ui["base"] + "/images/verify", data=f"csrf={csrf}".encode()),
                         timeout=60).read().decode()
    cli = mf("images", "verify", "--all")
    assert cli.code != 0 and cli.stderr.strip().startswith("Error:")
    assert html_unescape(cli.stderr.strip()) in html_unescape(answer)


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
