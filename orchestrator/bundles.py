"""Air-gapped bundles: images and their signed manifest as one file (``mf images save``/``load``),
for a machine with no registry. The manifest is the release format of ``registry.py``
(docs/releases.md), signed when the bundle is written; loading checks it and each image's id first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from providers.errors import ImageError

from . import cache_dir, engine, images, signing
from .registry import FORMAT, mf_version

BUNDLE_MANIFEST = "manifest.signed.json"


def _image_id_of_save(path: Path) -> str:
    """The image id a `docker save` archive holds: sha256 of its config JSON (what the engine will load)."""
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise ImageError(f"{path.name} is not a docker image archive.")
        [item] = json.loads(member.read())
        config_member = tar.extractfile(item["Config"])
        if config_member is None:
            raise ImageError(f"{path.name} has no image config.")
        return "sha256:" + hashlib.sha256(config_member.read()).hexdigest()


def save_bundle(specs: list[images.ImageSpec], output: Path, key_source: str | None,
                progress: images.Progress) -> Path:
    """One tar with each image (docker save) and a manifest signed now, listing their image ids."""
    key = signing.load_private(key_source)
    client = engine.client()
    entries = []
    partial = output.with_name(f".{output.name}.partial")
    try:
        with tarfile.open(partial, "w") as bundle:
            for spec in specs:
                if not engine.image_exists(spec.tag):
                    raise ImageError(f"{spec.tag} is not on this machine.", f"Build or pull it first: mf images build "
                                                                            f"{spec.provider}.")
                image = client.images.get(spec.tag)
                progress(f"saving {spec.tag}")
                name = f"images/{spec.provider}-{spec.flavour}.tar"
                with tempfile.NamedTemporaryFile(prefix="mf-save-", suffix=".tar") as tmp:
                    for chunk in image.save(named=True):
                        tmp.write(chunk)
                    tmp.flush()
                    bundle.add(tmp.name, arcname=name)
                entries.append({"provider": spec.provider, "flavour": spec.flavour,
                                "content_tag": spec.tag.split(":", 1)[1], "reference": spec.tag, "digest": None,
                                "image_id": image.id, "lock_hash": spec.lock_hash, "versions": spec.key_versions,
                                "file": name})
            manifest = {"format": FORMAT, "mf_version": mf_version(), "registry": None,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "images": entries}
            body = json.dumps(signing.sign(manifest, key), indent=2).encode()
            info = tarfile.TarInfo(BUNDLE_MANIFEST)
            info.size, info.mtime, info.mode = len(body), int(time.time()), 0o644
            bundle.addfile(info, io.BytesIO(body))
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return output


def load_bundle(path: Path, progress: images.Progress) -> list[str]:
    """Check the bundle's signature and every image's id against it, then load and tag them (all or none)."""
    client = engine.client()
    try:
        with tarfile.open(path) as bundle, tempfile.TemporaryDirectory(prefix="mf-bundle-") as tmp:
            member = bundle.extractfile(BUNDLE_MANIFEST)
            if member is None:
                raise ImageError(f"{path.name} has no {BUNDLE_MANIFEST}: it is not an mf bundle.")
            signed = json.loads(member.read())
            manifest = signing.verify(signed, path.name)
            checked = []
            for entry in manifest.get("images", []):
                target = Path(tmp) / Path(entry["file"]).name
                source = bundle.extractfile(entry["file"])
                if source is None:
                    raise ImageError(f"{path.name} lacks {entry['file']}.")
                with target.open("wb") as fh:
                    shutil.copyfileobj(source, fh, 1 << 20)
                found = _image_id_of_save(target)
                if found != entry["image_id"]:
                    raise ImageError(f"{entry['file']} in {path.name} holds image {found[:19]}, but the signed manifest "
                                     f"says {entry['image_id'][:19]}: the bundle was changed.",
                                     "Do not load it; get the bundle again from its publisher.")
                checked.append((entry, target))
            loaded = []
            for entry, target in checked:
                progress(f"loading {entry['reference']}")
                with target.open("rb") as fh:
                    client.images.load(fh)
                image = client.images.get(entry["image_id"])
                repository, tag = entry["reference"].split(":", 1)
                image.tag(repository, tag)
                loaded.append(entry["reference"])
    except (tarfile.TarError, EOFError, ValueError, KeyError) as exc:
        raise ImageError(f"{path.name} is truncated or damaged ({type(exc).__name__}): nothing was loaded.",
                         "Copy the bundle again.") from None
    cache = cache_dir() / "releases" / f"bundle-{hashlib.sha256(signing.canonical(manifest)).hexdigest()[:16]}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(signed, indent=2))
    return loaded
