"""The images: their sizes, the rebuild after a one-line change (kept builder against stage replayed), the
SBOM scan after it, and with --cold the builds from nothing."""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import alternate, median, status
from orchestrator import engine, images, label, recipes

SIZE_TARGETS_MB = {("gguf", "cpu"): 300, ("gguf", "cuda"): 2500, ("huggingface", "cpu"): 1300, ("unsloth", "cuda"): 9000}
REBUILD_TARGET_S = 20.0
#: cold builds: what keeps a fresh CI run (every image from nothing) inside its budget
COLD_BUILD_TARGETS_S = {"gguf": 600, "huggingface": 300}


def rebuild_after_a_change(spec: images.ImageSpec, kept_builder: bool) -> float:
    """Seconds from a one-line change in providers/ to its image built (context written and sent included,
    the SBOM scan not): with the builder stage taken from its kept image (what `mf` does), or replayed
    from the layer cache with the wheels in the context (what a plain multi-stage build does)."""
    quiet: Callable[[str], None] = lambda line: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "providers"
        shutil.copytree(recipes.PROVIDERS_SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
        with (src / "log.py").open("a") as fh:
            fh.write(f"# bench {time.time()} {kept_builder}\n")
        original, recipes.PROVIDERS_SRC = recipes.PROVIDERS_SRC, src
        try:
            changed = images.image_spec(spec.provider, spec.flavour)
            args = images.build_args(changed, quiet)
            wheels = None if kept_builder else images.stage_wheelhouse(changed, quiet)
            started = time.perf_counter()
            context = Path(tmp) / "context.tar"
            if kept_builder:
                images.write_image_context(changed, context, quiet)
            else:
                images.write_context(changed, wheels, context)
            with context.open("rb") as fh:
                engine.build_image(fh, changed.tag, buildargs=args, labels=changed.labels(), on_line=quiet)
            seconds = time.perf_counter() - started
            engine.client().images.remove(changed.tag, force=True)
            return seconds
        finally:
            recipes.PROVIDERS_SRC = original


def bench_images(cold: bool) -> dict[str, Any]:
    rows = []
    for (provider, flavour), target in SIZE_TARGETS_MB.items():
        try:
            spec = images.image_spec(provider, flavour)
        except Exception as exc:
            rows.append({"image": f"{provider} {flavour}", "size_mb": None, "target_mb": target, "note": str(exc)})
            continue
        attrs = engine.image_attrs(spec.tag)
        note = ""
        if attrs is None:  # an earlier build of the same recipe differs in the code layer only
            earlier = engine.client().images.list(filters={"label": [f"{label('kind')}=image",
                                                                     f"{label('provider')}={provider}",
                                                                     f"{label('flavour')}={flavour}"]})
            if earlier:
                attrs, note = max((img.attrs for img in earlier), key=lambda a: a["Created"]), "(latest earlier build)"
        rows.append({"image": f"{provider} {flavour}", "tag": spec.tag, "target_mb": target,
                     "size_mb": round(attrs["Size"] / 1e6) if attrs else None,
                     "note": note if attrs else "not built"})
    result: dict[str, Any] = {"sizes": rows, "rebuild_s": {}, "rebuild_ways_s": {}, "sbom_s": {},
                              "cold_build_s": {}}
    for provider, flavour in (("gguf", "cpu"), ("huggingface", "cpu"), ("unsloth", "cuda"), ("gguf", "cuda")):
        spec = images.image_spec(provider, flavour)
        if flavour == "cuda" and provider == "gguf" and not (engine.image_exists(spec.tag) or images.build_cached(spec)):
            continue  # never compile the CUDA kernels here: `make image-gguf FLAVOUR=cuda` does
        images.ensure(spec, lambda line: None)
        images.ensure_builder(spec, lambda line: None)
        name = f"{provider} {flavour}"
        ways = alternate(2, {"kept builder": functools.partial(rebuild_after_a_change, spec, kept_builder=True),
                             "stage replayed": functools.partial(rebuild_after_a_change, spec, kept_builder=False)})
        result["rebuild_ways_s"][name] = ways
        result["rebuild_s"][name] = median(ways["kept builder"])
        if images.syft_path() is not None:
            started = time.perf_counter()
            images.write_sbom(spec, lambda line: None)
            result["sbom_s"][name] = time.perf_counter() - started
        if cold and flavour == "cpu":
            started = time.perf_counter()
            tag = f"modelforge-bench/{provider}:cold"
            wheels = images.stage_wheelhouse(spec, lambda line: None)
            with tempfile.TemporaryDirectory() as tmp:
                context = Path(tmp) / "context.tar"
                images.write_context(spec, wheels, context)
                args = {"BASE": recipes.BASE_RUNTIME.tag, "BASE_BUILD": recipes.BASE_BUILD.tag, "FLAVOUR": "cpu"}
                with context.open("rb") as fh:
                    engine.build_image(fh, tag, buildargs=args, labels={}, on_line=lambda line: None, nocache=True)
            result["cold_build_s"][provider] = time.perf_counter() - started
            engine.client().images.remove(tag, force=True)
    return result


def rows(im: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for row in im["sizes"]:
        size = row["size_mb"]
        verdict = f"{status(size, row['target_mb'], False)} {row['note']}".strip() if size else row["note"]
        lines.append(f"| image size: {row['image']} (MB) | {size if size is not None else '-'} | | | "
                     f"<= {row['target_mb']} | {verdict} |")
    for provider, seconds in im["rebuild_s"].items():
        ways = im.get("rebuild_ways_s", {}).get(provider)
        replayed = f"{median(ways['stage replayed']):.1f}" if ways else ""
        ratio = f"{seconds / median(ways['stage replayed']):.2f}" if ways else ""
        lines.append(f"| rebuild after a one-line change: {provider}, kept builder vs stage replayed (s) | "
                     f"{seconds:.1f} | {replayed} | {ratio} | <= {REBUILD_TARGET_S:g} | "
                     f"{status(seconds, REBUILD_TARGET_S, False)} |")
    for provider, seconds in im.get("sbom_s", {}).items():
        lines.append(f"| SBOM scan after that rebuild: {provider} (s) | {seconds:.1f} | | | | |")
    for provider, seconds in im["cold_build_s"].items():
        target = COLD_BUILD_TARGETS_S[provider]
        lines.append(f"| cold build (no cache, wheels staged): {provider} (s) | {seconds:.0f} | | | <= {target} | "
                     f"{status(seconds, target, False)} |")
    return lines
