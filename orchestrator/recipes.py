"""Image recipes: what goes into each provider image (its recipe under images/<name>/) and the
content-derived tags and labels it gets. Pure: this module reads files and never asks the engine;
building the images is :mod:`orchestrator.images`.

An image recipe is ``images/<provider>/Dockerfile`` plus one hash-locked
``requirements.<flavour>.txt`` per flavour (and an optional ``requirements.build.txt`` for the
builder stage). A flavour that builds differently has its own ``Dockerfile.<flavour>`` and may add
``requirements.build.<flavour>.txt`` (the gguf cuda flavour's CUDA toolkit, say).
The tag ``modelforge/<provider>:<flavour>-<hash12>`` hashes the Dockerfile, the
locks, the provider package and the base images, so any change to what is inside gives a new tag.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path

import ModelForge
import providers
from providers.errors import ImageError
from providers.provider_factory import BUILTIN_DISTRIBUTION, PROVIDER_ORIGINS, PROVIDER_REGISTRY, plugin_recipe

from . import IN_CHECKOUT, PROJECT_ROOT, project_labels


def _recipes_dir() -> Path:
    """images/ of the checkout, or the same files installed with the wheel (package modelforge_images)."""
    if IN_CHECKOUT:
        return PROJECT_ROOT / "images"
    from importlib.resources import files

    return Path(str(files("modelforge_images")))


IMAGES_DIR = _recipes_dir()
#: The Dockerfile of a plugin that ships only a lock.
LOCKED_VENV_DOCKERFILE = IMAGES_DIR / "locked-venv" / "Dockerfile"
#: The Dockerfile of a plugin that extends a built-in image (its recipe has a file ``extends``).
EXTENDS_DOCKERFILE = IMAGES_DIR / "extends" / "Dockerfile"
EXTENDS_FILE = "extends"
PROVIDERS_SRC = Path(providers.__file__).resolve().parent
#: The ModelForge compatibility package (``ModelForge.exceptions`` ...), in every image beside providers/.
COMPAT_SRC = Path(ModelForge.__file__).resolve().parent
BASE_SCRIPT = IMAGES_DIR / "base" / "build-rootfs.sh"
BUILD_LOCK = "requirements.build.txt"
#: A recipe's optional script, run once at build with bytecode writing on (see images/locked-venv/Dockerfile).
WARM_IMPORTS = "warm-imports.py"
REPOSITORY = "modelforge"
_BUILDER_STAGE = re.compile(r"^\s*FROM\s+\S+\s+AS\s+builder\s*$", re.IGNORECASE | re.MULTILINE)
_COPIES_APP = re.compile(r"^\s*(COPY|ADD)\s(.*\s)?\.?/?app(/\S*)?\s", re.IGNORECASE | re.MULTILINE)
#: CUDA major version -> the oldest Linux driver that runs it (NVIDIA's compatibility table).
CUDA_DRIVER_FLOORS = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


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


def project_metadata() -> tuple[str, str, dict[str, str]]:
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
    _, _, group = project_metadata()
    lines = ["[modelforge.providers]", *(f"{name} = {target}" for name, target in sorted(group.items()))]
    return "\n".join(lines) + "\n"


def _metadata_txt() -> str:
    name, version, _ = project_metadata()
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"


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


def app_files(provider: str) -> dict[str, bytes]:
    """What goes into an image's last layer: the providers package and its entry points (and a plugin's)."""
    files = {f"app/providers/{p.relative_to(PROVIDERS_SRC).as_posix()}": p.read_bytes()
             for p in _tree_files(PROVIDERS_SRC)}
    files.update({f"app/ModelForge/{p.relative_to(COMPAT_SRC).as_posix()}": p.read_bytes() for p in _tree_files(COMPAT_SRC)})
    dist = "app/modelforge.dist-info"
    files[f"{dist}/METADATA"] = _metadata_txt().encode()
    files[f"{dist}/entry_points.txt"] = _entry_points_txt().encode()
    files.update(_plugin_files(provider))
    return files


@dataclass(frozen=True)
class ImageSpec:
    """One provider image in one flavour: its recipe's files, hashes, tags and labels."""

    provider: str
    flavour: str
    recipe: Path

    @cached_property
    def parent(self) -> ImageSpec | None:
        """The built-in image a plugin's recipe extends (its file ``extends``), in the same flavour."""
        name = extended_provider(self.recipe)
        return ImageSpec(name, self.flavour, IMAGES_DIR / name) if name else None

    @property
    def dockerfile(self) -> Path:
        if self.parent is not None:
            return EXTENDS_DOCKERFILE
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
        if self.parent is not None:  # the extras' lock, when the plugin has extras
            return [self.lock] if self.lock.exists() else []
        return [self.lock, *self.build_locks]

    @property
    def warm_imports(self) -> bytes:
        """The recipe's warm-imports.py, or nothing (the Dockerfile then skips the step)."""
        path = self.recipe / WARM_IMPORTS
        return path.read_bytes() if path.exists() else b""

    def unlocked(self) -> Path | None:
        """The lock a build needs and the recipe lacks (its requirements.in not locked yet), or None."""
        if self.parent is None:
            return None if self.lock.exists() else self.lock
        source = self.recipe / "requirements.in"
        wants = source.exists() and any(line.split("#", 1)[0].strip() for line in source.read_text().splitlines())
        return self.lock if wants and not self.lock.exists() else None

    @cached_property
    def lock_hash(self) -> str:
        return _sha256(*(p.read_bytes() for p in self.locks))[:12]

    def app_files(self) -> dict[str, bytes]:
        """What goes into the image's last layer: the providers package and its entry points."""
        return app_files(self.provider)

    def _base_tags(self) -> list[bytes]:
        parent = [self.parent.tag.encode()] if self.parent is not None else []
        return [BASE_RUNTIME.tag.encode()] + ([BASE_BUILD.tag.encode()] if self.uses_build_base else []) + parent

    @cached_property
    def content_hash(self) -> str:
        parts: list[bytes] = [self.provider.encode(), self.flavour.encode(), self.dockerfile.read_bytes()]
        parts += [p.read_bytes() for p in self.locks] + [self.warm_imports]
        parts += [name.encode() + b"\0" + data for name, data in sorted(self.app_files().items())]
        parts += self._base_tags()
        return _sha256(*parts)

    @cached_property
    def build_hash(self) -> str:
        """What the layers before the project's code depend on: a build with the same build hash on the
        engine means a change to providers/ alone rebuilds only the last layers."""
        parts = [self.dockerfile.read_bytes(), *(p.read_bytes() for p in self.locks), self.warm_imports]
        return _sha256(*parts, *self._base_tags())[:12]

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

    @property
    def tag(self) -> str:
        return f"{REPOSITORY}/{self.provider}:{self.flavour}-{self.content_hash[:12]}"

    @property
    def key_versions(self) -> dict[str, str]:
        if self.parent is not None:
            extras = lock_versions(self.lock) if self.lock.exists() else {}
            return {**self.parent.key_versions, **{k: v for k, v in extras.items()
                                                   if k in _direct_requirements(self.recipe, self.flavour)}}
        pins = lock_versions(self.lock)
        return {name: pins[name] for name in _direct_requirements(self.recipe, self.flavour) if name in pins}

    @property
    def driver_floor(self) -> str | None:
        """The oldest NVIDIA driver the image's CUDA runtime (from its lock) works with."""
        if self.parent is not None:
            return self.parent.driver_floor
        pins = lock_versions(self.lock)
        runtime = next((v for k, v in pins.items() if k.startswith("nvidia-cuda-runtime")), None)
        return CUDA_DRIVER_FLOORS.get(int(runtime.split(".")[0])) if runtime else None

    def labels(self) -> dict[str, str]:
        extra = {"driver_floor": self.driver_floor} if self.driver_floor else {}
        return project_labels(
            "image",
            provider=self.provider,
            flavour=self.flavour,
            content_hash=self.content_hash,
            lock_hash=self.lock_hash,
            build_hash=self.build_hash,
            versions=",".join(f"{k}=={v}" for k, v in self.key_versions.items()),
            **extra,
        )

    def builder_labels(self) -> dict[str, str]:
        """The labels of the kept builder stage (found by them when `mf images prune` runs)."""
        return project_labels("builder", provider=self.provider, flavour=self.flavour, build_hash=self.build_hash)


def extended_provider(recipe: Path) -> str | None:
    """The built-in provider whose image a plugin's recipe extends (its file ``extends``), or None."""
    path = recipe / EXTENDS_FILE
    if recipe.parent == IMAGES_DIR or not path.is_file():
        return None
    name = path.read_text().split("#", 1)[0].strip().lower()
    if not (IMAGES_DIR / name / "Dockerfile").is_file():
        builtins = sorted(p.parent.name for p in IMAGES_DIR.glob("*/requirements.*.txt") if p.parent.name != "locked-venv")
        raise ImageError(f"{path} names {name!r}, which is not a built-in provider image: {sorted(set(builtins))}.",
                         f"Write one of them in {path}.")
    return name


def recipe_dir(provider: str) -> Path:
    """images/<provider>/ for built-ins; for a plugin, the folder its provider class names as ``image_recipe``."""
    builtin = IMAGES_DIR / provider
    if builtin.is_dir() or PROVIDER_ORIGINS.get(provider, BUILTIN_DISTRIBUTION) == BUILTIN_DISTRIBUTION:
        return builtin
    cls = PROVIDER_REGISTRY.get(provider)
    recipe = plugin_recipe(cls) if cls is not None else None
    named = getattr(cls, "image_recipe", None)
    if recipe is None and named:
        return Path(named)  # named but missing: the error then names the folder
    return recipe or builtin


def flavours(provider: str) -> list[str]:
    recipe = recipe_dir(provider)
    parent = extended_provider(recipe)
    if parent is not None:
        return flavours(parent)
    return sorted(
        p.name.removeprefix("requirements.").removesuffix(".txt")
        for p in recipe.glob("requirements.*.txt") if not p.name.startswith("requirements.build.")
    )


def resolve_flavour(provider: str, requested: str | None, gpu_host: bool | Callable[[], bool]) -> str:
    """The flavour to use: the one asked for, else cuda on a GPU host, else cpu. ``gpu_host`` may be a
    question (the engine's, from :func:`orchestrator.images.resolve_flavour`) asked only when needed."""
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
    if callable(gpu_host):
        gpu_host = gpu_host()
    for choice in (["cuda", "cpu"] if gpu_host else ["cpu"]):
        if choice in available:
            return choice
    # A CUDA image still runs without a GPU (validate, say); jobs that need one are refused before this.
    return available[0]


def image_spec(provider: str, flavour: str | None, gpu_host: bool | Callable[[], bool]) -> ImageSpec:
    chosen = resolve_flavour(provider, flavour, gpu_host)
    return ImageSpec(provider, chosen, recipe_dir(provider))


def all_specs() -> list[ImageSpec]:
    """Every provider image this installation can build: each registered provider, each flavour."""
    from providers.provider_factory import available_providers

    return [ImageSpec(name, flavour, recipe_dir(name)) for name in available_providers() for flavour in flavours(name)]
