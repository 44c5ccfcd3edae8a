"""Images that travel: push to a registry, pull by digest, check against the signed release manifest.
Format: docs/releases.md. Moving images with their manifest as one file (air-gapped bundles) is
``bundles.py``.

References are ``<registry>/modelforge/<provider>:<flavour>-<hash12>``: the content tag stays the key,
the registry digest pins the bytes. The release manifest of an mf version travels in the same registry,
as a one-file image ``<registry>/modelforge/release:<mf version>`` (FROM scratch), so a registry is all
a team needs. Credentials come from the user's docker config (``docker login``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from providers.errors import ImageError, InterruptedJobError

from . import cache_dir, config, engine, images, project_labels, recipes, signing

FORMAT = "modelforge-release/1"
RELEASE_REPOSITORY = "modelforge/release"
RELEASE_FILE = "release.json"

Events = Callable[[dict[str, Any]], None]


def mf_version() -> str:
    return recipes.project_metadata()[1]


def registry_or_none(override: str | None = None) -> str | None:
    value = config.get("registry", override)
    if not value:
        return None
    where = "" if override else ("MF_REGISTRY" if os.environ.get("MF_REGISTRY") else "the config's registry")
    return config.check_registry(value, where)


def require_registry(override: str | None = None) -> str:
    registry = registry_or_none(override)
    if not registry:
        raise ImageError("No registry is configured.",
                         "Pass --registry HOST[:PORT]/PATH, set MF_REGISTRY, or run `mf config set registry ...`.")
    return registry


def remote_reference(registry: str, spec: images.ImageSpec) -> str:
    return f"{registry}/{spec.tag}"


def release_reference(registry: str) -> str:
    return f"{registry}/{RELEASE_REPOSITORY}:{mf_version()}"


def _host(registry: str) -> str:
    return registry.split("/", 1)[0]


def _registry_error(text: str, registry: str, what: str) -> ImageError:
    """One line for what the engine said about a registry operation."""
    low = text.lower()
    short = " ".join(text.split())[:200]
    if any(s in low for s in ("unauthorized", "authentication required", "no basic auth", "denied:",
                              "incorrect username or password")):
        return ImageError(f"The registry {registry} refused {what}: it needs a login, or the credentials are wrong.",
                          f"Run `docker login {_host(registry)}` and try again.")
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout", "dial tcp", "connection reset",
                              "server gave http response", "tls: ", "network is unreachable")):
        return ImageError(f"Cannot reach the registry {registry} ({short}).",
                          "Check the registry address (MF_REGISTRY / --registry) and that it is up.")
    if "no space left" in low:
        return ImageError(f"The disk filled up during {what} ({short}).",
                          "Free space for the Docker engine (docker system prune, mf images prune), then run again: "
                          "the layers already downloaded are kept.")
    if any(s in low for s in ("manifest unknown", "not found", "name unknown")):
        return ImageError(f"The registry {registry} has no {what.removeprefix('the pull of ')} ({short}).",
                          "Push it first (mf images push), or check the registry address.")
    return ImageError(f"{what[0].upper() + what[1:]} failed: {short}")


def _follow(stream: Iterator[dict[str, Any]], registry: str, what: str, on_event: Events) -> dict[str, Any]:
    """Read a push or pull stream to its end; the aux payload (push) or the last status (pull)."""
    last: dict[str, Any] = {}
    try:
        for event in stream:
            if "error" in event or "errorDetail" in event:
                detail = event.get("errorDetail", {}).get("message") or event.get("error", "")
                raise _registry_error(str(detail), registry, what)
            if "aux" in event:
                last.update(event["aux"])
            on_event(event)
            if event.get("status"):
                last["status"] = event["status"]
    except KeyboardInterrupt:
        raise InterruptedJobError(f"Stopped {what}; nothing was tagged.",
                                  "Run it again: the layers already transferred are kept.") from None
    finally:
        on_event({"mf": "end"})
    return last


# -- pushing ---------------------------------------------------------------------------------
def push_image(spec: images.ImageSpec, registry: str, on_event: Events, progress: images.Progress) -> dict[str, Any]:
    """Push one image; return its entry for the release manifest (reference, digest, image id, ...)."""
    from docker.errors import APIError

    client = engine.client()
    local = client.images.get(images.ensure(spec, progress))
    reference = remote_reference(registry, spec)
    repository, tag = reference.rsplit(":", 1)
    local.tag(repository, tag)
    progress(f"pushing {reference}")
    try:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True)
        aux = _follow(stream, registry, f"the push of {reference}", on_event)
    except APIError as exc:
        raise _registry_error(str(exc.explanation or exc), registry, f"the push of {reference}") from None
    digest = aux.get("Digest")
    if not digest:
        raise ImageError(f"The registry {registry} did not report a digest for {reference}.")
    sbom = images.sbom_path(spec)
    return {
        "provider": spec.provider, "flavour": spec.flavour, "content_tag": spec.tag.split(":", 1)[1],
        "reference": reference, "digest": digest, "image_id": local.id, "lock_hash": spec.lock_hash,
        "versions": spec.key_versions,
        "sbom_sha256": hashlib.sha256(sbom.read_bytes()).hexdigest() if sbom.exists() else None,
    }


def publish_release(entries: list[dict[str, Any]], registry: str, key_source: str | None, on_event: Events,
                    progress: images.Progress) -> tuple[dict[str, Any], str]:
    """Write the release manifest (these entries over those of an earlier push of this release), sign it
    and push it; return it and its reference. CI's matrix jobs each push one image and hand their entry
    to one release job, so parallel pushes never overwrite each other's entries."""
    key = signing.load_private(key_source)
    for entry in entries:
        if not str(entry.get("reference", "")).startswith(f"{registry}/"):
            raise ImageError(f"The entry for {entry.get('reference')} was pushed to another registry than {registry}.")
    manifest = {"format": FORMAT, "mf_version": mf_version(), "registry": registry,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "images": list(entries)}
    with contextlib.suppress(ImageError):  # keep the other images of an earlier push of this release
        earlier = fetch_release(registry, verify=True, quiet=True)
        pushed = {(e["provider"], e["flavour"]) for e in entries}
        manifest["images"] = [e for e in earlier.get("images", []) if (e["provider"], e["flavour"]) not in pushed
                              ] + list(entries)
    signed = signing.sign(manifest, key)
    return signed, _push_release(signed, registry, on_event, progress)


def push(specs: list[images.ImageSpec], registry: str, key_source: str | None, on_event: Events,
         progress: images.Progress) -> tuple[dict[str, Any], str]:
    """Push each image, then write, sign and push the release manifest; return it and its reference."""
    signing.load_private(key_source)  # before any upload: an unsignable release is not started
    entries = [push_image(spec, registry, on_event, progress) for spec in specs]
    return publish_release(entries, registry, key_source, on_event, progress)


def _push_release(signed: dict[str, Any], registry: str, on_event: Events, progress: images.Progress) -> str:
    from docker.errors import APIError

    reference = release_reference(registry)
    repository, tag = reference.rsplit(":", 1)
    body = json.dumps(signed, indent=2).encode()
    with tempfile.TemporaryDirectory(prefix="mf-release-") as tmp:
        context = Path(tmp) / "context.tar"
        with tarfile.open(context, "w") as tar:
            for name, data in (("Dockerfile", f"FROM scratch\nCOPY {RELEASE_FILE} /{RELEASE_FILE}\n".encode()),
                               (RELEASE_FILE, body)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        with context.open("rb") as fh:
            engine.build_image(fh, reference, buildargs={}, labels=project_labels("release"),
                               on_line=lambda line: None)
    progress(f"pushing the signed release manifest {reference}")
    try:
        _follow(engine.client().api.push(repository, tag=tag, stream=True, decode=True), registry,
                f"the push of {reference}", on_event)
    except APIError as exc:
        raise _registry_error(str(exc.explanation or exc), registry, f"the push of {reference}") from None
    return reference


# -- the release manifest -----------------------------------------------------------------------
def _cache_file(registry: str) -> Path:
    return cache_dir() / "releases" / f"{hashlib.sha256(registry.encode()).hexdigest()[:16]}-{mf_version()}.json"


def fetch_release(registry: str, verify: bool = True, quiet: bool = False) -> dict[str, Any]:
    """The release manifest of this mf version from ``registry``, its signature checked; cached when verified."""
    from docker.errors import APIError, NotFound

    client = engine.client()
    reference = release_reference(registry)
    repository, tag = reference.rsplit(":", 1)
    try:
        _follow(client.api.pull(repository, tag=tag, stream=True, decode=True), registry,
                f"the pull of the release manifest {reference}", lambda event: None)
        container = client.containers.create(reference, entrypoint=["/nonexistent"], network_mode="none")
    except (APIError, NotFound) as exc:
        raise _registry_error(str(getattr(exc, "explanation", None) or exc), registry,
                              f"the pull of the release manifest {reference}") from None
    try:
        chunks, _ = container.get_archive(f"/{RELEASE_FILE}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(RELEASE_FILE)
            raw = member.read() if member else b""
    finally:
        container.remove(force=True)
    try:
        signed = json.loads(raw)
    except ValueError:
        raise ImageError(f"The release manifest {reference} is not JSON.", "Push the release again.") from None
    if not verify:
        return dict(signed.get("manifest", {}))
    manifest = signing.verify(signed, reference)
    if manifest.get("format") != FORMAT:
        raise ImageError(f"The release manifest {reference} has format {manifest.get('format')!r}, not {FORMAT!r}.",
                         "Upgrade mf, or push the release with this mf.")
    target = _cache_file(registry)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(signed, indent=2))
    os.replace(partial, target)
    return manifest


def entry_for(manifest: dict[str, Any], spec: images.ImageSpec, where: str) -> dict[str, Any]:
    for entry in manifest.get("images", []):
        if entry.get("provider") == spec.provider and entry.get("flavour") == spec.flavour:
            wanted = spec.tag.split(":", 1)[1]
            if entry.get("content_tag") != wanted:
                raise ImageError(
                    f"The release in {where} has {spec.provider} {entry.get('content_tag')}; this mf needs {wanted} "
                    "(its recipes differ).",
                    "Use the mf version that pushed the release, or build locally (mf run --build).",
                )
            return dict(entry)
    raise ImageError(f"{spec.provider} ({spec.flavour}) is not in the signed release manifest of {where}.",
                     f"Push it (mf images push {spec.provider}), or build it locally (mf run --build).")


def registry_digest(reference: str, registry: str) -> str:
    from docker.errors import APIError

    try:
        return str(engine.client().images.get_registry_data(reference).id)
    except APIError as exc:
        raise _registry_error(str(exc.explanation or exc), registry, f"the lookup of {reference}") from None


# -- pulling ---------------------------------------------------------------------------------
def pull(spec: images.ImageSpec, registry: str, on_event: Events, progress: images.Progress,
         manifest: dict[str, Any] | None = None) -> str:
    """Pull ``spec``'s image by the digest in the verified release manifest, check its id, tag it locally."""
    from docker.errors import APIError

    manifest = manifest if manifest is not None else fetch_release(registry)
    entry = entry_for(manifest, spec, registry)
    reference, digest = entry["reference"], entry["digest"]
    current = registry_digest(reference, registry)
    if current != digest:
        raise ImageError(f"{reference} in the registry now points at {current[:19]}, but the signed manifest says "
                         f"{digest[:19]}: refusing to pull different bytes.",
                         "Ask the publisher to push the release again; do not use this tag.")
    repository = reference.rsplit(":", 1)[0]
    progress(f"pulling {repository}@{digest[:19]}")
    client = engine.client()
    try:
        _follow(client.api.pull(repository, tag=digest, stream=True, decode=True), registry,
                f"the pull of {reference}", on_event)
        pulled = client.images.get(f"{repository}@{digest}")
    except APIError as exc:
        raise _registry_error(str(exc.explanation or exc), registry, f"the pull of {reference}") from None
    if pulled.id != entry["image_id"]:
        with contextlib.suppress(Exception):
            client.images.remove(f"{repository}@{digest}", force=True)
        raise ImageError(f"{reference} pulled as image {pulled.id[:19]}, but the signed manifest says "
                         f"{entry['image_id'][:19]}: removed it.", "Do not use this registry's copy; tell its publisher.")
    local_repository, local_tag = spec.tag.split(":", 1)
    pulled.tag(local_repository, local_tag)
    return spec.tag


def verified_release_entries() -> list[dict[str, Any]]:
    """The image entries of every release manifest verified on this machine (pull, verify, bundle load)."""
    folder = cache_dir() / "releases"
    entries: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(ImageError, OSError, ValueError):
            entries += signing.verify(json.loads(path.read_text()), str(path)).get("images", [])
    return entries


def verified_reference(tag: str) -> str | None:
    """``repo@digest`` of the local image ``tag`` when a verified release lists its image id: what a cluster
    node pulls, pinned to the very bytes."""
    attrs = engine.image_attrs(tag)
    if attrs is None:
        return None
    for entry in verified_release_entries():
        if entry.get("image_id") == attrs["Id"] and entry.get("digest"):
            return f"{str(entry['reference']).rsplit(':', 1)[0]}@{entry['digest']}"
    return None


def digest_reference(spec: images.ImageSpec, registry: str | None = None) -> str | None:
    """``repo@digest`` of ``spec``'s image in a verified release (this machine's records, else the configured
    registry's release, fetched and verified now): what a cluster pulls. None when there is none."""
    wanted = spec.tag.split(":", 1)[1]

    def find(entries: list[dict[str, Any]]) -> str | None:
        for entry in entries:
            if (entry.get("provider"), entry.get("flavour"), entry.get("content_tag")) == (
                    spec.provider, spec.flavour, wanted) and entry.get("digest"):
                return f"{str(entry['reference']).rsplit(':', 1)[0]}@{entry['digest']}"
        return None

    found = find(verified_release_entries())
    target = registry_or_none(registry)
    if found is None and target is not None:
        found = find(fetch_release(target).get("images", []))
    return found


def check_signed(spec: images.ImageSpec) -> None:
    """With require_signed on, refuse an image that no verified release manifest lists (by image id)."""
    if not config.enabled("require_signed"):
        return
    image_id = engine.client().images.get(spec.tag).id
    if not any(e.get("image_id") == image_id for e in verified_release_entries()):
        raise ImageError(
            f"{spec.tag} is not in any verified, signed release manifest, and MF_REQUIRE_SIGNED is set.",
            "Pull it from your registry (mf images pull) or load a signed bundle (mf images load), "
            "or unset MF_REQUIRE_SIGNED to run local builds.",
        )


def obtain(spec: images.ImageSpec, progress: images.Progress, on_event: Events, registry: str | None = None,
           build: bool = False) -> str:
    """The image for a job: local if present, else pulled (verified) when a registry is set, else built."""
    if engine.image_exists(spec.tag):
        check_signed(spec)
        return spec.tag
    registry = registry_or_none(registry)
    if build or registry is None:
        if config.enabled("require_signed"):
            raise ImageError(f"{spec.tag} is missing and MF_REQUIRE_SIGNED allows only signed images.",
                             "Configure your registry (MF_REGISTRY) so mf pulls it, or load a signed bundle.")
        return images.build(spec, progress)
    return pull(spec, registry, on_event, progress)


def verify_local(specs: list[images.ImageSpec], registry: str) -> list[dict[str, Any]]:
    """Each local image against the signed manifest and the registry's current digest."""
    manifest = fetch_release(registry)
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"provider": spec.provider, "flavour": spec.flavour, "tag": spec.tag}
        try:
            entry = entry_for(manifest, spec, registry)
            attrs = engine.image_attrs(spec.tag)
            if attrs is None:
                row.update(status="missing", detail="not on this machine (mf images pull)")
            elif attrs["Id"] != entry["image_id"]:
                row.update(status="mismatch", detail=f"local image {attrs['Id'][:19]} is not the signed "
                                                      f"{entry['image_id'][:19]}")
            elif registry_digest(entry["reference"], registry) != entry["digest"]:
                row.update(status="mismatch", detail=f"the registry's tag no longer points at {entry['digest'][:19]}")
            else:
                row.update(status="verified", detail=f"{entry['digest'][:19]} signed")
        except ImageError as exc:
            row.update(status="unlisted", detail=exc.message)
        rows.append(row)
    return rows
