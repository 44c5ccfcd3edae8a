"""Provider images on the engine: building each from its recipe (:mod:`orchestrator.recipes`: the
files, the content tag, the labels) from a staged wheelhouse with no network, keeping its builder
stage, writing its SBOM, listing and pruning them.

:func:`image_spec` here is the recipe's, with the engine asked for the host's default flavour when
none is named (the job path passes what its backend found instead: ``recipes.image_spec``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from providers.errors import ImageError

from . import IN_CHECKOUT, PROJECT_ROOT, cache_dir, engine, label, recipes
from .recipes import BASE_BUILD, BASE_RUNTIME, REPOSITORY, WARM_IMPORTS, BaseImage, lock_versions
from .recipes import ImageSpec as ImageSpec
from .recipes import flavours as flavours

Progress = Callable[[str], None]


def sbom_root() -> Path:
    """Where each image's SBOM is kept, named by its content tag: $MF_SBOM_DIR, else ~/.cache/modelforge/sbom."""
    if os.environ.get("MF_SBOM_DIR"):
        return Path(os.environ["MF_SBOM_DIR"]).expanduser()
    return cache_dir() / "sbom"


def syft_path() -> Path | None:
    """syft, from where this installation put it (the ``sbom`` extra), never from whatever PATH holds."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "syft"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def wheelhouse_root() -> Path:
    """Staged wheels: $MF_WHEELHOUSE, else .cache/wheelhouse in a checkout, else ~/.cache/modelforge/wheelhouse."""
    if os.environ.get("MF_WHEELHOUSE"):
        return Path(os.environ["MF_WHEELHOUSE"])
    return PROJECT_ROOT / ".cache" / "wheelhouse" if IN_CHECKOUT else cache_dir() / "wheelhouse"


def resolve_flavour(provider: str, requested: str | None = None, gpu_host: bool | None = None) -> str:
    """The flavour to use: the one asked for, else cuda on a host whose engine has an NVIDIA runtime, else cpu
    (the engine is asked only when no flavour is asked for)."""
    return recipes.resolve_flavour(provider, requested, engine.has_nvidia_runtime if gpu_host is None else gpu_host)


def image_spec(provider: str, flavour: str | None = None, gpu_host: bool | None = None) -> ImageSpec:
    chosen = resolve_flavour(provider, flavour, gpu_host)
    return ImageSpec(provider, chosen, recipes.recipe_dir(provider))


def ensure_base(base: BaseImage, progress: Progress) -> str:
    """The base image's tag, built now by images/base/build-rootfs.sh where missing (needs root)."""
    if engine.image_exists(base.tag):
        return base.tag
    if os.geteuid() != 0:
        raise ImageError(
            f"The base image {base.tag} is missing, and building it needs root (debootstrap).",
            "Run `sudo make image-base`, then try again.",
        )
    progress(f"building {base.tag} from Debian packages (debootstrap, about a minute)")
    proc = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["bash", str(recipes.BASE_SCRIPT), base.variant, base.tag],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0 or not engine.image_exists(base.tag):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ImageError(f"Building the base image {base.tag} failed: {tail}", "Run `make image-base` to see why.")
    return base.tag


# -- building ---------------------------------------------------------------------------------
def wheelhouse(spec: ImageSpec) -> Path:
    return wheelhouse_root() / f"{spec.provider}-{spec.flavour}"


def stage_wheelhouse(spec: ImageSpec, progress: Progress) -> Path:
    """Download every locked file (hash-checked) on the host, where the index is reachable."""
    target = wheelhouse(spec)
    stamp = target / f".staged-{spec.lock_hash}"
    if stamp.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    if not any(lock_versions(lock) for lock in spec.locks):  # an extending plugin without extras
        stamp.touch()
        return target
    progress(f"staging wheels for {spec.provider} ({spec.flavour}) into {target}")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--require-hashes", "--no-deps", "--dest", str(target)]
    for lock in spec.locks:
        cmd += ["-r", str(lock)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise ImageError(
            f"Staging the wheels of {spec.lock} failed: {tail}",
            "Check that the package index is reachable, or that the lock's hashes are right (`make lock`).",
        )
    stamp.touch()
    return target


def write_context(spec: ImageSpec, wheels: Path | None, out: Path, dockerfile: str | None = None) -> None:
    """The build context, as a tar: Dockerfile, locks, wheels/ and app/ (deterministic entries).
    ``wheels`` None leaves the wheels out (a build whose builder stage is an image already)."""

    def add(tar: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None) -> None:
        info = tarfile.TarInfo(name)
        info.mode = 0o644
        info.mtime = 0
        if path is not None:
            info.size = path.stat().st_size
            with path.open("rb") as fh:
                tar.addfile(info, fh)
        else:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))

    with tarfile.open(out, "w") as tar:
        add(tar, "Dockerfile", dockerfile.encode() if dockerfile is not None else spec.dockerfile.read_bytes())
        for lock in spec.locks:
            add(tar, lock.name, lock.read_bytes())
        if spec.parent is not None:  # the extends Dockerfile copies both, even when there are no extras
            add(tar, "extras.txt", b"".join(lock.read_bytes() for lock in spec.locks))
            folder = tarfile.TarInfo("wheels")
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(folder)
        add(tar, WARM_IMPORTS, spec.warm_imports)
        for wheel in sorted(wheels.iterdir()) if wheels is not None else []:
            if wheel.is_file() and not wheel.name.startswith("."):
                add(tar, f"wheels/{wheel.name}", path=wheel)
        for name, data in sorted(spec.app_files().items()):
            add(tar, name, data)


def build_args(spec: ImageSpec, progress: Progress) -> dict[str, str]:
    """The build's arguments: the bases (built first where missing) and the flavour."""
    buildargs = {"BASE": ensure_base(BASE_RUNTIME, progress), "FLAVOUR": spec.flavour}
    if spec.uses_build_base:
        buildargs["BASE_BUILD"] = ensure_base(BASE_BUILD, progress)
    if spec.parent is not None:  # a plugin that extends a built-in image: that image first
        buildargs["PARENT"] = ensure(spec.parent, progress)
    return buildargs


def ensure_builder(spec: ImageSpec, progress: Progress) -> str | None:
    """The recipe's kept builder stage, ``spec.builder_tag``, built now where missing (the wheels are
    staged for it); None for a recipe without one."""
    if not spec.has_builder_stage:
        return None
    if engine.image_exists(spec.builder_tag):
        return spec.builder_tag
    buildargs = build_args(spec, progress)
    with tempfile.TemporaryDirectory(prefix="mf-context-") as tmp:
        context = Path(tmp) / "context.tar"
        write_context(spec, stage_wheelhouse(spec, progress), context)
        progress(f"building {spec.builder_tag} (the builder stage, kept for the next code change)")
        with context.open("rb") as fh:
            engine.build_image(fh, spec.builder_tag, buildargs=buildargs, target="builder",
                               labels=spec.builder_labels(), on_line=progress)
    return spec.builder_tag


def write_image_context(spec: ImageSpec, out: Path, progress: Progress) -> None:
    """The context the image itself is built from: with the builder stage taken from its kept image
    (no wheels), or, for a recipe without one, the whole recipe with the staged wheels."""
    builder = ensure_builder(spec, progress)
    if builder is None:
        write_context(spec, stage_wheelhouse(spec, progress), out)
    else:
        write_context(spec, None, out, recipes.builder_stage_from(spec.dockerfile.read_text(), builder))


def build(spec: ImageSpec, progress: Progress) -> str:
    """Build the image. A recipe with a ``builder`` stage builds that stage first under
    ``spec.builder_tag`` (once per recipe); the image is then built with that stage taken from the
    kept image, so a code change sends no wheels (GBs for unsloth) and reuses every layer below it."""
    if not spec.dockerfile.exists():
        raise ImageError(f"Provider {spec.provider} has no image recipe: {spec.dockerfile} is missing.")
    unlocked = spec.unlocked()
    if unlocked is not None and spec.parent is not None:
        raise ImageError(f"The {spec.provider} provider's requirements.in is not locked: {unlocked} is missing.",
                         f"Run `mf providers lock {spec.provider}`, then build again.")
    buildargs = build_args(spec, progress)
    with tempfile.TemporaryDirectory(prefix="mf-context-") as tmp:
        context = Path(tmp) / "context.tar"
        write_image_context(spec, context, progress)
        progress(f"building {spec.tag}")
        with context.open("rb") as fh:
            engine.build_image(fh, spec.tag, buildargs=buildargs, labels=spec.labels(), on_line=progress)
    if syft_path() is not None:
        write_sbom(spec, progress)
    else:
        progress("no SBOM written: syft is not installed beside mf (pip install 'modelforge[sbom]')")
    return spec.tag


def ensure(spec: ImageSpec, progress: Progress) -> str:
    """The image's tag, built now where it is not on the engine."""
    if engine.image_exists(spec.tag):
        return spec.tag
    return build(spec, progress)


def build_cached(spec: ImageSpec) -> bool:
    """Whether the slow part of this recipe is on the engine: its builder stage where it has one, else an
    image built from it (any version of the project's code)."""
    if spec.has_builder_stage:
        return engine.image_exists(spec.builder_tag)
    found = engine.client().images.list(filters={"label": [
        f"{label('kind')}=image", f"{label('provider')}={spec.provider}", f"{label('flavour')}={spec.flavour}",
        f"{label('build-hash')}={spec.build_hash}"]})
    return bool(found)


# -- the SBOM ---------------------------------------------------------------------------------
def sbom_path(spec: ImageSpec) -> Path:
    return sbom_root() / spec.provider / f"{spec.flavour}-{spec.content_hash[:12]}.cdx.json"


def write_sbom(spec: ImageSpec, progress: Progress) -> Path:
    """A CycloneDX SBOM made by syft from the built image itself (offline), kept under its content tag."""
    syft = syft_path()
    if syft is None:
        raise ImageError("syft is not installed beside mf, so no SBOM can be made.",
                         "Install the sbom extra (pip install 'modelforge[sbom]'), then run `mf images sbom` again.")
    if not engine.image_exists(spec.tag):
        raise ImageError(f"{spec.tag} is not built.", f"Build it first: mf images build {spec.provider}.")
    target = sbom_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    progress(f"writing the SBOM of {spec.tag} (syft)")
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
    proc = subprocess.run(  # noqa: S603 - syft from our own installation, fixed arguments
        [str(syft), "scan", f"docker:{spec.tag}", "-q", "-o", f"cyclonedx-json={partial}"],
        capture_output=True, text=True, check=False, env=env,
    )
    if proc.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise ImageError(f"syft could not make the SBOM of {spec.tag}: {tail[:300]}")
    os.replace(partial, target)
    return target


def sbom(spec: ImageSpec, progress: Progress) -> Path:
    """The image's SBOM, made now if it was not made at build."""
    path = sbom_path(spec)
    return path if path.exists() else write_sbom(spec, progress)


# -- listing and pruning ----------------------------------------------------------------------
def image_rows() -> list[dict[str, object]]:
    """Status of every provider image: built, stale (an older build exists) or missing."""
    client = engine.client()
    project = client.images.list(filters={"label": label("kind") + "=image"})
    rows: list[dict[str, object]] = []
    for spec in recipes.all_specs():
        attrs = engine.image_attrs(spec.tag)
        older = [img for img in project if img.labels.get(label("provider")) == spec.provider
                 and img.labels.get(label("flavour")) == spec.flavour and spec.tag not in img.tags]
        status = "built" if attrs else "stale" if older else "missing"
        rows.append({
            "provider": spec.provider, "flavour": spec.flavour, "tag": spec.tag, "status": status,
            "size_mb": round(attrs["Size"] / 1e6) if attrs else None,
            "created": attrs["Created"][:19] if attrs else None,
            "lock_hash": spec.lock_hash,
            # whether a change to the code rebuilds in seconds: the recipe's builder stage is kept
            "builder": ("kept" if engine.image_exists(spec.builder_tag) else "not built")
            if spec.has_builder_stage else "none",
            "superseded": [t for img in older for t in img.tags],
        })
    return rows


def prune(progress: Progress) -> list[str]:
    """Remove the project's images that no current recipe produces (found by label); keep the rest, and
    those of providers this installation does not know (a plugin that is not loaded here)."""
    from providers.provider_factory import available_providers

    client = engine.client()
    specs = recipes.all_specs()
    known = set(available_providers())
    keep = {spec.tag for spec in specs} | {spec.builder_tag for spec in specs} | {BASE_RUNTIME.tag, BASE_BUILD.tag}
    removed = []
    found = {img.id: img for img in (client.images.list(filters={"label": label("kind") + "=image"})
                                     + client.images.list(filters={"label": label("kind") + "=builder"})
                                     # every image built on a base inherits this label: hence the dict
                                     + client.images.list(filters={"label": label("image") + "=base"}))}
    for img in found.values():
        tags = [t for t in img.tags if t.startswith(f"{REPOSITORY}/")]
        if not tags or any(t in keep for t in tags):
            continue
        provider = img.labels.get(label("provider"))
        if provider and provider not in known and img.labels.get(label("kind")) in ("image", "builder"):
            progress(f"left {', '.join(tags)}: provider {provider} is not installed here")
            continue
        for tag in tags:
            try:
                client.images.remove(tag)
                removed.append(tag)
                progress(f"removed {tag}")
            except Exception as exc:  # in use by a container, for example
                progress(f"kept {tag}: {exc}")
    return removed
