"""The custom-provider guide as commands: ``mf providers new`` (a package), ``mf providers lock`` (its image
recipe, hash-locked) and the host half of ``mf providers check`` (the interface, before any build; the
image half is ``providers/runtime/check.py``).

A generated package (``mf-provider-NAME/``)::

    pyproject.toml                 the entry point in modelforge.providers
    mf_provider_NAME/
        providers/MODULE.py        the provider (a template, or the user's file byte for byte)
        logging_config.py, exceptions.py, providers/provider_factory.py
                                   ModelForge's modules, so a file written for ModelForge (``from
                                   ..logging_config import logger``) imports unchanged
        image/                     the image recipe: ``extends`` (a built-in image it builds on) and/or
                                   requirements.in, locked into requirements.<flavour>.txt
    tests/test_NAME_provider.py    the guide's step 4: ``mf providers check`` in the image, under pytest
"""

from __future__ import annotations

import ast
import inspect
import keyword
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.errors import ConfigurationError, ImageError
from providers.protocol import PROTOCOL_METHODS

from . import recipes
from .provider_templates import (
    EXAMPLE_MODEL,
    KEY_LIBRARY,
    PYPROJECT,
    README,
    REQUIREMENTS_EXTRA,
    REQUIREMENTS_OWN,
    SHIMS,
    TEMPLATES,
    TEST,
)

STACKS = {
    # stack -> the built-in image it extends (None: a lock of its own)
    "transformers": "huggingface",
    "llama-cpp": "gguf",
    "none": None,
}
#: what a module importing these needs: the stack picked for --from-file when --stack is not given
_STACK_OF_IMPORT = {"llama_cpp": "llama-cpp", "transformers": "transformers", "torch": "transformers",
                    "peft": "transformers", "accelerate": "transformers"}


# -- names ------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """A new provider's name: a lower-case Python identifier no built-in provider has."""
    from providers.provider_factory import BUILTIN_DISTRIBUTION, PROVIDER_ORIGINS

    if not name.isidentifier() or keyword.iskeyword(name) or name != name.lower():
        raise ConfigurationError(f"Provider name {name!r} is not a lower-case Python identifier.",
                                 "Use letters, digits and underscores, starting with a letter: e.g. my_provider.")
    builtins = sorted(n for n, origin in PROVIDER_ORIGINS.items() if origin == BUILTIN_DISTRIBUTION)
    if name in builtins or (recipes.IMAGES_DIR / name).is_dir():
        raise ConfigurationError(f"Provider name {name!r} is a built-in provider's ({builtins}).",
                                 "Pick another name; a plugin cannot take a built-in's.")
    return name


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) + "Provider"


# -- reading a user's provider file -----------------------------------------------------------
@dataclass
class ProviderSource:
    text: str
    module: str  # the module's name in the package (the file's stem)
    cls: str
    stack: str | None  # what its imports suggest


def read_provider_file(path: Path, name: str) -> ProviderSource:
    """The provider class in a file written for ModelForge (or for this project), found by its methods."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"Cannot read {path}: {exc.strerror}.", "Pass the provider's .py file.") from None
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ConfigurationError(f"{path} is not valid Python: line {exc.lineno}: {exc.msg}.",
                                 "Fix the file, then run the command again.") from None
    candidates = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            if set(PROTOCOL_METHODS) <= methods:
                candidates.append(node)
    if not candidates:
        raise ConfigurationError(f"{path} has no class with all of {', '.join(PROTOCOL_METHODS)}.",
                                 "Write the four methods of the provider protocol (docs/custom-providers.md).")
    if len(candidates) > 1:  # the one whose get_provider_name returns the name
        named = [c for c in candidates if f"return {name!r}" in ast.unparse(c) or f'return "{name}"' in ast.unparse(c)]
        if len(named) != 1:
            raise ConfigurationError(f"{path} has several provider classes: {[c.name for c in candidates]}.",
                                     "Keep one provider class in the file.")
        candidates = named
    module = path.stem if path.stem.isidentifier() and not keyword.iskeyword(path.stem) else f"{name}_provider"
    levels = [n.level for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 2]
    if levels:
        raise ConfigurationError(f"{path} imports {levels[0]} packages up (from {'.' * levels[0]}...).",
                                 "ModelForge's modules are two levels up (from ..exceptions import ...).")
    stack = None
    for walked in ast.walk(tree):
        names = [a.name for a in walked.names] if isinstance(walked, ast.Import) else (
            [walked.module] if isinstance(walked, ast.ImportFrom) and walked.module and walked.level == 0 else [])
        for imported in names:
            stack = stack or _STACK_OF_IMPORT.get(imported.split(".")[0])
    return ProviderSource(text, module, candidates[0].name, stack)


# -- the templates are in orchestrator/provider_templates.py ---------------------------------------
def scaffold(name: str, target: Path, stack: str | None, from_file: Path | None) -> tuple[Path, str, list[str]]:
    """Write the package for provider ``name`` into ``target`` (which must not exist or be empty).
    Returns the folder, the stack and the files written."""
    check_name(name)
    source = read_provider_file(from_file, name) if from_file is not None else None
    stack = stack or (source.stack if source else None) or "transformers"
    if stack not in STACKS:
        raise ConfigurationError(f"Unknown stack {stack!r}.", f"Pick one of {sorted(STACKS)}.")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigurationError(f"{target} exists and is not empty: mf providers new does not overwrite.",
                                 "Pass another --dir, or remove the folder first.")
    package = f"mf_provider_{name}"
    module, cls = (source.module, source.cls) if source else (f"{name}_provider", _camel(name))
    text = source.text if source else TEMPLATES[stack].format(name=name, cls=cls)
    parent = STACKS[stack]
    files: dict[str, str] = {
        "pyproject.toml": PYPROJECT.format(name=name, package=package, module=module, cls=cls),
        "README.md": README.format(name=name, stack=stack, model=EXAMPLE_MODEL[stack]),
        f"tests/test_{name}_provider.py": TEST.format(name=name),
        **{f"{package}/{rel}": body.format(name=name) for rel, body in SHIMS.items()},
        f"{package}/providers/{module}.py": text,
    }
    if parent is None:
        files[f"{package}/image/requirements.in"] = REQUIREMENTS_OWN.format(name=name)
    else:
        files[f"{package}/image/{recipes.EXTENDS_FILE}"] = f"{parent}\n"
        files[f"{package}/image/requirements.in"] = REQUIREMENTS_EXTRA.format(
            name=name, parent=parent, key=KEY_LIBRARY.get(parent, "its lock"))
    for rel, body in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")  # the user's file: written as read, byte for byte
    return target, stack, sorted(files)


# -- locking ----------------------------------------------------------------------------------
def _uv() -> Path:
    """uv, from where mf is installed (the `lock` extra), else from PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return beside
    import shutil

    found = shutil.which("uv")
    if found is None:
        raise ImageError("Locking needs uv, which is not installed beside mf.",
                         "pip install 'modelforge[lock]' (into the environment mf runs from).")
    return Path(found)


def _find_links(flavour: str) -> str | None:
    """Where pip finds torch's CPU build on this machine (the Makefile's LOCK_FIND_LINKS), for cpu locks."""
    if flavour == "cuda":
        return None
    if os.environ.get("LOCK_FIND_LINKS"):
        return os.environ["LOCK_FIND_LINKS"]
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],  # noqa: S603
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


def _conflict_line(stderr: str) -> str:
    """uv's explanation of an unsolvable lock, as one line."""
    lines = [re.sub(r"^([\s│╰─▶×]|error:|cause:)+", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith("hint:")]
    return " ".join(lines) or "uv failed without a message"


def _requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def _keep_new_pins(lock_text: str, parent_pins: dict[str, str]) -> str:
    """The lock's header and the blocks of packages the parent's lock does not pin."""
    out: list[str] = []
    keep = True
    for line in lock_text.splitlines(keepends=True):
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            keep = recipes._normalize(match.group(1)) not in parent_pins
        elif not line.startswith((" ", "\t")):
            keep = True  # a header comment
        if keep:
            out.append(line)
    return "".join(out)


def lock_recipe_dir(provider: str, package_dir: Path | None) -> Path:
    """The recipe to lock: in ``package_dir`` (a package `mf providers new` wrote), else the installed
    provider's, else in ./mf-provider-NAME (so a new package can be locked before it is installed)."""
    from providers.provider_factory import BUILTIN_DISTRIBUTION, PROVIDER_ORIGINS, PROVIDER_REGISTRY

    name = provider.strip().lower()
    if PROVIDER_ORIGINS.get(name) == BUILTIN_DISTRIBUTION:
        raise ConfigurationError(f"{name} is a built-in provider: its recipe is images/{name}/.",
                                 f"Lock it with `make lock-{name}`.")
    if package_dir is None and name in PROVIDER_REGISTRY:
        return recipes.recipe_dir(name)
    folder = package_dir or Path(f"mf-provider-{name}")
    recipe = folder / f"mf_provider_{name}" / "image"
    if not recipe.is_dir():
        raise ConfigurationError(f"No provider {name!r} is installed, and {recipe} does not exist.",
                                 f"Run `mf providers new {name}` first, or pass --dir with the package's folder.")
    return recipe


def lock(provider: str, flavours: list[str] | None, package_dir: Path | None = None, progress: Any = print) -> list[Path]:
    """Hash-lock a plugin's recipe (requirements.in) for the image's Python and platform, the way
    `make lock-<provider>` locks the built-in recipes; returns the locks written."""
    name = provider.strip().lower()
    recipe = lock_recipe_dir(name, package_dir)
    source = recipe / "requirements.in"
    if not source.is_file():
        raise ImageError(f"The {name} provider's recipe {recipe} has no requirements.in to lock.",
                         "List the image's libraries in requirements.in (mf providers new writes one).")
    parent = recipes.extended_provider(recipe)
    available = recipes.flavours(parent) if parent else ["cpu", "cuda"]
    chosen = flavours or (available if parent else ["cpu"])
    for flavour in chosen:
        if flavour not in available:
            raise ConfigurationError(f"The {name} provider has no {flavour!r} flavour. Flavours: {available}.",
                                     f"Pass --flavour {available[0]}.")
    written = []
    for flavour in chosen:
        out = recipe / f"requirements.{flavour}.txt"
        if parent is not None and not _requirement_lines(source):
            out.write_text(f"# Nothing beyond the {parent} image's lock (images/{parent}/requirements.{flavour}.txt).\n")
            written.append(out)
            continue
        cmd = [str(_uv()), "pip", "compile", "--quiet", "--system-certs", "--generate-hashes", "--python-version",
               "3.11", "--python-platform", "x86_64-manylinux_2_28"]
        links = _find_links(flavour)
        if links:
            cmd += ["--find-links", links]
        parent_lock = recipes.IMAGES_DIR / parent / f"requirements.{flavour}.txt" if parent else None
        if parent_lock is not None:
            cmd += ["--constraint", str(parent_lock)]
        progress(f"locking {source} for CPython 3.11 on Linux x86-64 ({flavour})")
        # uv writes the lock only when it solves; an existing lock's pins are kept where they still fit
        proc = subprocess.run([*cmd, source.name, "-o", out.name], cwd=recipe,  # noqa: S603
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ImageError(f"Cannot lock {source} ({flavour}): {_conflict_line(proc.stderr)}",
                             "Relax or remove one of the conflicting requirements, then lock again.")
        if parent_lock is not None:
            out.write_text(_keep_new_pins(out.read_text(), recipes.lock_versions(parent_lock)))
        written.append(out)
    return written


# -- the host's checks ------------------------------------------------------------------------
_CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "load_model": (("model", "AutoModelForCausalLM"), {"quantization_config": None, "device_map": "auto"}),
    "load_tokenizer": (("model",), {}),
    "validate_model_access": (("model", "AutoModelForCausalLM"), {}),
    "get_provider_name": ((), {}),
}


def host_checks(name: str, flavour: str | None) -> list[dict[str, Any]]:
    """What can be checked without the image: registration, the methods and their signatures, the name
    the provider gives itself, and the image recipe. A record per check, as in the image."""
    from providers.provider_factory import IMAGE_ONLY_IMPORTS, PLUGIN_ERRORS, PROVIDER_REGISTRY, create_provider

    key = name.strip().lower()
    records: list[dict[str, Any]] = []

    def add(check: str, ok: bool | None, detail: str) -> None:
        records.append({"name": check, "ok": ok, "detail": detail, "seconds": 0.0, "where": "host"})

    cls = PROVIDER_REGISTRY.get(key)
    if cls is None:
        error = PLUGIN_ERRORS.get(key)
        add("registered", False, error.message if error else
            f"no provider {name!r} is installed (pip install -e ./mf-provider-{key}); installed: {sorted(PROVIDER_REGISTRY)}")
        return records
    image_only = IMAGE_ONLY_IMPORTS.get(key)
    add("registered", True, f"{cls.__module__}:{cls.__qualname__}" +
        (f" (imports {', '.join(image_only)} in its image only)" if image_only else ""))
    for method, (args, kwargs) in _CALLS.items():
        func = getattr(cls, method, None)
        if not callable(func):
            add(f"{method} signature", False, f"missing: the provider protocol needs {method} (docs/custom-providers.md)")
            continue
        try:
            inspect.signature(func).bind(None, *args, **kwargs)
        except TypeError as exc:
            shown = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            add(f"{method} signature", False, f"cannot be called as {method}({shown}): {exc}")
        except ValueError:
            add(f"{method} signature", None, "not readable (a builtin); checked in the image")
        else:
            add(f"{method} signature", True, f"{method}{inspect.signature(func)}")
    try:
        given = create_provider(key).get_provider_name()
    except Exception as exc:  # a constructor that needs what only the image has
        add("provider name", None, f"not created on the host ({type(exc).__name__}); checked in the image")
    else:
        ok = str(given).lower() == key
        add("provider name", ok, repr(given) if ok else
            f"get_provider_name() returns {given!r}, but the entry point registers {key!r}: make them the same")
    try:
        spec = recipes.image_spec(key, flavour, False)
        unlocked = spec.unlocked()
        if unlocked is not None:
            add("image recipe", False, f"{unlocked} is missing: run `mf providers lock {key}`")
        else:
            extends = f" (extends {spec.parent.provider})" if spec.parent else ""
            add("image recipe", True, f"{spec.recipe} -> {spec.tag}{extends}")
    except ImageError as exc:
        add("image recipe", False, f"{exc.message} {exc.hint}".strip())
    return records
