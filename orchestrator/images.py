"""Provider images: what goes into each (its recipe under images/<name>/), its content-derived
tag, and building it from a staged wheelhouse with no network.

An image recipe is ``images/<provider>/Dockerfile`` plus one hash-locked
``requirements.<flavour>.txt`` per flavour (and an optional ``requirements.build.txt`` for the
builder stage). A flavour that builds differently has its own ``Dockerfile.<flavour>`` and may add
``requirements.build.<flavour>.txt`` (the gguf cuda flavour's CUDA toolkit, say).
The tag ``modelforge/<provider>:<flavour>-<hash12>`` hashes the Dockerfile, the
locks, the provider package and the base images, so any change to what is inside gives a new tag.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path

import providers
from providers.errors import ImageError
from providers.provider_factory import BUILTIN_DISTRIBUTION, PROVIDER_ORIGINS, PROVIDER_REGISTRY

from . import IN_CHECKOUT, LABEL_PREFIX, PROJECT_ROOT, cache_dir, engine


def _recipes_dir() -> Path:
    """images/ of the checkout, or the same files installed with the wheel (package modelforge_images)."""
    if IN_CHECKOUT:
        return PROJECT_ROOT / "images"
    from importlib.resources import files

    return Path(str(files("modelforge_images")))


IMAGES_DIR = _recipes_dir()
#: The Dockerfile of a plugin that ships only a lock.
LOCKED_VENV_DOCKERFILE = IMAGES_DIR / "locked-venv" / "Dockerfile"
PROVIDERS_SRC = Path(providers.__file__).resolve().parent
BASE_SCRIPT = IMAGES_DIR / "base" / "build-rootfs.sh"
BUILD_LOCK = "requirements.build.txt"
#: A recipe's optional script, run once at build with bytecode writing on (see images/locked-venv/Dockerfile).
WARM_IMPORTS = "warm-imports.py"
REPOSITORY = "modelforge"
_BUILDER_STAGE = re.compile(r"^\s*FROM\s+\S+\s+AS\s+builder\s*$", re.IGNORECASE | re.MULTILINE)
_COPIES_APP = re.compile(r"^\s*(COPY|ADD)\s(.*\s)?\.?/?app(/\S*)?\s", re.IGNORECASE | re.MULTILINE)
#: CUDA major version -> the oldest Linux driver that runs it (NVIDIA's compatibility table).
CUDA_DRIVER_FLOORS = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

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


def builder_stage(dockerfile: str) -> str | None:
    """The text of the Dockerfile's ``builder`` stage, from its FROM line to the next FROM; None without one."""
    lines: list[str] | None = None
    for line in dockerfile.splitlines(keepends=True):
        if re.match(r"\s*FROM\s", line, re.IGNORECASE):
            if lines is not None:
                break
            if _BUILDER_STAGE.match(line):
                lines = []
        if lines is not None:
            lines.append(line)
    return "".join(lines) if lines is not None else None


def builder_stage_from(dockerfile: str, image: str) -> str:
    """The Dockerfile with its ``builder`` stage replaced by ``FROM image AS builder``: the later stages'
    `COPY --from=builder` then read the kept image, and the build needs none of the stage's inputs."""
    out: list[str] = []
    skipping = False
    for line in dockerfile.splitlines(keepends=True):
        if re.match(r"\s*FROM\s", line, re.IGNORECASE):
            skipping = _BUILDER_STAGE.match(line) is not None
            if skipping:
                out.append(f"FROM {image} AS builder\n")
                continue
        if not skipping:
            out.append(line)
    return "".join(out)


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _tree_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".pyo"))
    )


@dataclass(frozen=True)
class BaseImage:
    """An image made from Debian packages by images/base/build-rootfs.sh (no registry needed)."""

    variant: str  # runtime | build

    @property
    def tag(self) -> str:
        content = _sha256(BASE_SCRIPT.read_bytes(), self.variant.encode())
        return f"{REPOSITORY}/base:{self.variant}-{content[:12]}"

    def ensure(self, progress: Progress) -> str:
        if engine.image_exists(self.tag):
            return self.tag
        if os.geteuid() != 0:
            raise ImageError(
                f"The base image {self.tag} is missing, and building it needs root (debootstrap).",
                "Run `sudo make image-base`, then try again.",
            )
        progress(f"building {self.tag} from Debian packages (debootstrap, about a minute)")
        proc = subprocess.run(  # noqa: S603 - our own script, fixed arguments
            ["bash", str(BASE_SCRIPT), self.variant, self.tag],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0 or not engine.image_exists(self.tag):
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise ImageError(f"Building the base image {self.tag} failed: {tail}", "Run `make image-base` to see why.")
        return self.tag


BASE_RUNTIME = BaseImage("runtime")
BASE_BUILD = BaseImage("build")


def lock_versions(lock: Path) -> dict[str, str]:
    """``name -> version`` for every pin in a hash-locked requirements file."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", lock.read_text(), flags=re.M)
    return {_normalize(name): version for name, version in pins}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _direct_requirements(recipe: Path, flavour: str) -> list[str]:
    """The names a flavour's lock was compiled from (requirements.<flavour>.in, else requirements.in)."""
    src = recipe / f"requirements.{flavour}.in"
    if not src.exists():
        src = recipe / "requirements.in"
    if not src.exists():
        return []
    names = []
    for line in src.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(_normalize(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]))
    return names


def _project_metadata() -> tuple[str, str, dict[str, str]]:
    """The project's name, version and built-in provider entry points: from the installed distribution
    (a wheel or an editable checkout give the same), else from the checkout's pyproject.toml."""
    try:
        dist = metadata.distribution(BUILTIN_DISTRIBUTION)
        group = {ep.name: ep.value for ep in dist.entry_points if ep.group == "modelforge.providers"}
        return dist.metadata["Name"], dist.version, group
    except metadata.PackageNotFoundError:
        project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
        return project["name"], project["version"], dict(project["entry-points"]["modelforge.providers"])


def _entry_points_txt() -> str:
    """The built-in providers' entry points, for the image's dist-info."""
    _, _, group = _project_metadata()
    lines = ["[modelforge.providers]", *(f"{name} = {target}" for name, target in sorted(group.items()))]
    return "\n".join(lines) + "\n"


def _metadata_txt() -> str:
    name, version, _ = _project_metadata()
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"


@dataclass(frozen=True)
class ImageSpec:
    """One provider image in one flavour."""

    provider: str
    flavour: str
    recipe: Path

    @property
    def dockerfile(self) -> Path:
        flavoured = self.recipe / f"Dockerfile.{self.flavour}"
        if flavoured.exists():
            return flavoured
        own = self.recipe / "Dockerfile"
        if own.exists() or self.recipe.parent == IMAGES_DIR:
            return own
        return LOCKED_VENV_DOCKERFILE

    @property
    def uses_build_base(self) -> bool:
        """Whether the Dockerfile has a builder stage on the compiler base (it names BASE_BUILD)."""
        return "BASE_BUILD" in self.dockerfile.read_text()

    @property
    def lock(self) -> Path:
        return self.recipe / f"requirements.{self.flavour}.txt"

    @property
    def build_locks(self) -> list[Path]:
        """The builder stage's locks: requirements.build.txt, then requirements.build.<flavour>.txt."""
        paths = [self.recipe / BUILD_LOCK, self.recipe / f"requirements.build.{self.flavour}.txt"]
        return [p for p in paths if p.exists()]

    @property
    def locks(self) -> list[Path]:
        return [self.lock, *self.build_locks]

    @property
    def warm_imports(self) -> bytes:
        """The recipe's warm-imports.py, or nothing (the Dockerfile then skips the step)."""
        path = self.recipe / WARM_IMPORTS
        return path.read_bytes() if path.exists() else b""

    @cached_property
    def lock_hash(self) -> str:
        return _sha256(*(p.read_bytes() for p in self.locks))[:12]

    def _app_files(self) -> dict[str, bytes]:
        """What goes into the image's last layer: the providers package and its entry points."""
        files = {f"app/providers/{p.relative_to(PROVIDERS_SRC).as_posix()}": p.read_bytes()
                 for p in _tree_files(PROVIDERS_SRC)}
        dist = "app/modelforge.dist-info"
        files[f"{dist}/METADATA"] = _metadata_txt().encode()
        files[f"{dist}/entry_points.txt"] = _entry_points_txt().encode()
        files.update(_plugin_files(self.provider))
        return files

    @cached_property
    def content_hash(self) -> str:
        parts: list[bytes] = [self.provider.encode(), self.flavour.encode(), self.dockerfile.read_bytes()]
        parts += [p.read_bytes() for p in self.locks] + [self.warm_imports]
        parts += [name.encode() + b"\0" + data for name, data in sorted(self._app_files().items())]
        parts += [BASE_RUNTIME.tag.encode()] + ([BASE_BUILD.tag.encode()] if self.uses_build_base else [])
        return _sha256(*parts)

    @cached_property
    def build_hash(self) -> str:
        """What the layers before the project's code depend on: a build with the same build hash on the
        engine means a change to providers/ alone rebuilds only the last layers."""
        parts = [self.dockerfile.read_bytes(), *(p.read_bytes() for p in self.locks), self.warm_imports,
                 BASE_RUNTIME.tag.encode()] + ([BASE_BUILD.tag.encode()] if self.uses_build_base else [])
        return _sha256(*parts)[:12]

    @property
    def has_builder_stage(self) -> bool:
        """Whether the Dockerfile has a stage named ``builder`` (compiles, or installs the venv) that is
        kept as its own image: one that copies the project's code (app/) is not, as its tag leaves the
        code out."""
        stage = builder_stage(self.dockerfile.read_text())
        return stage is not None and not _COPIES_APP.search(stage)

    @property
    def builder_tag(self) -> str:
        """The builder stage, kept under its own tag: `docker image prune` leaves a tagged image and its
        parents, so a code change reuses the stage's layers (the gguf cuda compile is 45 minutes on 2 cores)
        even after a prune. `mf images prune` drops it when no current recipe builds it."""
        return f"{REPOSITORY}/{self.provider}-builder:{self.flavour}-{self.build_hash}"

    def build_cached(self) -> bool:
        """Whether the slow part of this recipe is on the engine: its builder stage where it has one, else an
        image built from it (any version of the project's code)."""
        if self.has_builder_stage:
            return engine.image_exists(self.builder_tag)
        found = engine.client().images.list(filters={"label": [
            f"{label('kind')}=image", f"{label('provider')}={self.provider}", f"{label('flavour')}={self.flavour}",
            f"{label('build-hash')}={self.build_hash}"]})
        return bool(found)

    @property
    def tag(self) -> str:
        return f"{REPOSITORY}/{self.provider}:{self.flavour}-{self.content_hash[:12]}"

    @property
    def key_versions(self) -> dict[str, str]:
        pins = lock_versions(self.lock)
        return {name: pins[name] for name in _direct_requirements(self.recipe, self.flavour) if name in pins}

    @property
    def driver_floor(self) -> str | None:
        """The oldest NVIDIA driver the image's CUDA runtime (from its lock) works with."""
        pins = lock_versions(self.lock)
        runtime = next((v for k, v in pins.items() if k.startswith("nvidia-cuda-runtime")), None)
        return CUDA_DRIVER_FLOORS.get(int(runtime.split(".")[0])) if runtime else None

    def labels(self) -> dict[str, str]:
        extra = {"driver_floor": self.driver_floor} if self.driver_floor else {}
        return engine.project_labels(
            "image",
            provider=self.provider,
            flavour=self.flavour,
            content_hash=self.content_hash,
            lock_hash=self.lock_hash,
            build_hash=self.build_hash,
            versions=",".join(f"{k}=={v}" for k, v in self.key_versions.items()),
            **extra,
        )

    # -- building ---------------------------------------------------------------------------
    def wheelhouse(self) -> Path:
        return wheelhouse_root() / f"{self.provider}-{self.flavour}"

    def stage_wheelhouse(self, progress: Progress) -> Path:
        """Download every locked file (hash-checked) on the host, where the index is reachable."""
        target = self.wheelhouse()
        stamp = target / f".staged-{self.lock_hash}"
        if stamp.exists():
            return target
        target.mkdir(parents=True, exist_ok=True)
        progress(f"staging wheels for {self.provider} ({self.flavour}) into {target}")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--require-hashes", "--no-deps", "--dest", str(target)]
        for lock in self.locks:
            cmd += ["-r", str(lock)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise ImageError(
                f"Staging the wheels of {self.lock} failed: {tail}",
                "Check that the package index is reachable, or that the lock's hashes are right (`make lock`).",
            )
        stamp.touch()
        return target

    def write_context(self, wheels: Path | None, out: Path, dockerfile: str | None = None) -> None:
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
            add(tar, "Dockerfile", dockerfile.encode() if dockerfile is not None else self.dockerfile.read_bytes())
            for lock in self.locks:
                add(tar, lock.name, lock.read_bytes())
            add(tar, WARM_IMPORTS, self.warm_imports)
            for wheel in sorted(wheels.iterdir()) if wheels is not None else []:
                if wheel.is_file() and not wheel.name.startswith("."):
                    add(tar, f"wheels/{wheel.name}", path=wheel)
            for name, data in sorted(self._app_files().items()):
                add(tar, name, data)

    def build_args(self, progress: Progress) -> dict[str, str]:
        """The build's arguments: the bases (built first where missing) and the flavour."""
        buildargs = {"BASE": BASE_RUNTIME.ensure(progress), "FLAVOUR": self.flavour}
        if self.uses_build_base:
            buildargs["BASE_BUILD"] = BASE_BUILD.ensure(progress)
        return buildargs

    def ensure_builder(self, progress: Progress) -> str | None:
        """The recipe's kept builder stage, :attr:`builder_tag`, built now where missing (the wheels are
        staged for it); None for a recipe without one."""
        if not self.has_builder_stage:
            return None
        if engine.image_exists(self.builder_tag):
            return self.builder_tag
        buildargs = self.build_args(progress)
        with tempfile.TemporaryDirectory(prefix="mf-context-") as tmp:
            context = Path(tmp) / "context.tar"
            self.write_context(self.stage_wheelhouse(progress), context)
            progress(f"building {self.builder_tag} (the builder stage, kept for the next code change)")
            with context.open("rb") as fh:
                engine.build_image(fh, self.builder_tag, buildargs=buildargs, target="builder",
                                   labels=engine.project_labels("builder", provider=self.provider, flavour=self.flavour,
                                                                build_hash=self.build_hash),
                                   on_line=progress)
        return self.builder_tag

    def write_image_context(self, out: Path, progress: Progress) -> None:
        """The context the image itself is built from: with the builder stage taken from its kept image
        (no wheels), or, for a recipe without one, the whole recipe with the staged wheels."""
        builder = self.ensure_builder(progress)
        if builder is None:
            self.write_context(self.stage_wheelhouse(progress), out)
        else:
            self.write_context(None, out, builder_stage_from(self.dockerfile.read_text(), builder))

    def build(self, progress: Progress) -> str:
        """Build the image. A recipe with a ``builder`` stage builds that stage first under
        :attr:`builder_tag` (once per recipe); the image is then built with that stage taken from the
        kept image, so a code change sends no wheels (GBs for unsloth) and reuses every layer below it."""
        if not self.dockerfile.exists():
            raise ImageError(f"Provider {self.provider} has no image recipe: {self.dockerfile} is missing.")
        buildargs = self.build_args(progress)
        with tempfile.TemporaryDirectory(prefix="mf-context-") as tmp:
            context = Path(tmp) / "context.tar"
            self.write_image_context(context, progress)
            progress(f"building {self.tag}")
            with context.open("rb") as fh:
                engine.build_image(fh, self.tag, buildargs=buildargs, labels=self.labels(), on_line=progress)
        if syft_path() is not None:
            self.write_sbom(progress)
        else:
            progress("no SBOM written: syft is not installed beside mf (pip install 'modelforge[sbom]')")
        return self.tag

    def ensure(self, progress: Progress) -> str:
        if engine.image_exists(self.tag):
            return self.tag
        return self.build(progress)

    # -- the SBOM ---------------------------------------------------------------------------
    @property
    def sbom_path(self) -> Path:
        return sbom_root() / self.provider / f"{self.flavour}-{self.content_hash[:12]}.cdx.json"

    def write_sbom(self, progress: Progress) -> Path:
        """A CycloneDX SBOM made by syft from the built image itself (offline), kept under its content tag."""
        syft = syft_path()
        if syft is None:
            raise ImageError("syft is not installed beside mf, so no SBOM can be made.",
                             "Install the sbom extra (pip install 'modelforge[sbom]'), then run `mf images sbom` again.")
        if not engine.image_exists(self.tag):
            raise ImageError(f"{self.tag} is not built.", f"Build it first: mf images build {self.provider}.")
        target = self.sbom_path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        progress(f"writing the SBOM of {self.tag} (syft)")
        env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
        proc = subprocess.run(  # noqa: S603 - syft from our own installation, fixed arguments
            [str(syft), "scan", f"docker:{self.tag}", "-q", "-o", f"cyclonedx-json={partial}"],
            capture_output=True, text=True, check=False, env=env,
        )
        if proc.returncode != 0 or not partial.exists():
            partial.unlink(missing_ok=True)
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            raise ImageError(f"syft could not make the SBOM of {self.tag}: {tail[:300]}")
        os.replace(partial, target)
        return target

    def sbom(self, progress: Progress) -> Path:
        """The image's SBOM, made now if it was not made at build."""
        return self.sbom_path if self.sbom_path.exists() else self.write_sbom(progress)


def recipe_dir(provider: str) -> Path:
    """images/<provider>/ for built-ins; for a plugin, the folder its provider class names as ``image_recipe``."""
    builtin = IMAGES_DIR / provider
    if builtin.is_dir() or PROVIDER_ORIGINS.get(provider, BUILTIN_DISTRIBUTION) == BUILTIN_DISTRIBUTION:
        return builtin
    recipe = getattr(PROVIDER_REGISTRY.get(provider), "image_recipe", None)
    return Path(recipe) if recipe else builtin


def _plugin_files(provider: str) -> dict[str, bytes]:
    """A plugin's package and a dist-info with its entry points, so the registry in its image finds it."""
    origin = PROVIDER_ORIGINS.get(provider, BUILTIN_DISTRIBUTION)
    if origin == BUILTIN_DISTRIBUTION:
        return {}
    top = PROVIDER_REGISTRY[provider].__module__.split(".")[0]
    module_file = getattr(sys.modules[top], "__file__", None)
    if module_file is None:
        raise ImageError(f"Plugin {origin}: cannot find the files of its package {top}.",
                         "Install the plugin as a regular package (pip install).")
    package_dir = Path(module_file).parent
    files = {f"app/{top}/{p.relative_to(package_dir).as_posix()}": p.read_bytes() for p in _tree_files(package_dir)}
    dist = metadata.distribution(origin)
    dist_info = f"app/{re.sub(r'[-_.]+', '_', origin)}-{dist.version}.dist-info"
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {origin}\nVersion: {dist.version}\n".encode()
    files[f"{dist_info}/entry_points.txt"] = (dist.read_text("entry_points.txt") or "").encode()
    return files


def flavours(provider: str) -> list[str]:
    recipe = recipe_dir(provider)
    return sorted(
        p.name.removeprefix("requirements.").removesuffix(".txt")
        for p in recipe.glob("requirements.*.txt") if not p.name.startswith("requirements.build.")
    )


def resolve_flavour(provider: str, requested: str | None = None, gpu_host: bool | None = None) -> str:
    """The flavour to use: the one asked for, else cuda on a host whose engine has an NVIDIA runtime, else cpu."""
    available = flavours(provider)
    if not available:
        raise ImageError(
            f"Provider {provider} has no image recipe yet ({recipe_dir(provider)} has no requirements.<flavour>.txt)",
            "Add the provider's images/<name>/ recipe, or pick another provider (`mf providers`).",
        )
    if requested:
        if requested not in available:
            raise ImageError(f"Provider {provider} has no {requested!r} flavour. Flavours: {available}",
                             f"Pass --flavour {available[0]}, or leave --flavour out to get the host's default.")
        return requested
    if gpu_host is None:
        gpu_host = engine.has_nvidia_runtime()
    for choice in (["cuda", "cpu"] if gpu_host else ["cpu"]):
        if choice in available:
            return choice
    # A CUDA image still runs without a GPU (validate, say); jobs that need one are refused before this.
    return available[0]


def image_spec(provider: str, flavour: str | None = None, gpu_host: bool | None = None) -> ImageSpec:
    chosen = resolve_flavour(provider, flavour, gpu_host)
    return ImageSpec(provider, chosen, recipe_dir(provider))


def label(name: str) -> str:
    return f"{LABEL_PREFIX}.{name}"


def all_specs() -> list[ImageSpec]:
    """Every provider image this installation can build: each registered provider, each flavour."""
    from providers.provider_factory import available_providers

    return [ImageSpec(name, flavour, recipe_dir(name)) for name in available_providers() for flavour in flavours(name)]


def image_rows() -> list[dict[str, object]]:
    """Status of every provider image: built, stale (an older build exists) or missing."""
    client = engine.client()
    project = client.images.list(filters={"label": label("kind") + "=image"})
    rows: list[dict[str, object]] = []
    for spec in all_specs():
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
    specs = all_specs()
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
