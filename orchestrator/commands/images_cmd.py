"""`mf images build`: build provider images (the Makefile's image targets call this)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from .options import flavour_option, json_option
from .options import registry_option as shared_registry_option


@click.group("images", invoke_without_command=True)
@json_option
@click.pass_context
def images_group(ctx: click.Context, as_json: bool) -> None:
    """Provider images: list them (built / stale / missing), build them, prune superseded ones."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from .. import images
    from ..render import stdout_console

    rows = images.image_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("provider", "flavour", "tag", "status", "size MB", "created", "lock", "builder")
    style = {"built": "green", "stale": "yellow", "missing": "red"}
    for row in rows:
        table.add_row(str(row["provider"]), str(row["flavour"]), str(row["tag"]),
                      f"[{style[str(row['status'])]}]{row['status']}[/]", str(row["size_mb"] or "-"),
                      str(row["created"] or "-"), str(row["lock_hash"]), str(row["builder"]))
    stdout_console.print(table)


@images_group.command("prune")
def prune_command() -> None:
    """Remove the project's images and builder stages that no current recipe builds (superseded)."""
    from .. import images
    from ..render import stderr_console, stdout_console

    removed = images.prune(lambda line: stderr_console.print(f"[dim]{escape(line)}[/]"))
    stdout_console.print(f"removed {len(removed)} superseded image(s)")


@images_group.command("build")
@click.argument("name", required=False)
@click.option("--all", "build_all", is_flag=True, help="Build every provider that has an image recipe.")
@flavour_option
def build_command(name: str | None, build_all: bool, flavour: str | None) -> None:
    """Build the image of provider NAME (or `base` for the base images)."""
    if not name and not build_all:
        raise click.UsageError("Name a provider (see `mf providers`), `base`, or pass --all.")
    from providers.provider_factory import available_providers

    from .. import images, recipes
    from ..render import stderr_console, stdout_console

    def progress(line: str) -> None:
        stderr_console.print(f"[dim]{escape(line)}[/]", soft_wrap=True)

    if name == "base":
        for base in (recipes.BASE_RUNTIME, recipes.BASE_BUILD):
            stdout_console.print(images.ensure_base(base, progress))
        return
    names = [n for n in available_providers() if images.flavours(n)] if build_all else [name]
    for provider in names:
        assert provider is not None
        started = time.monotonic()
        spec = images.image_spec(provider.lower(), flavour)
        tag = images.ensure(spec, progress)
        stdout_console.print(f"{tag}  ({time.monotonic() - started:.1f} s)")


@images_group.command("sbom")
@click.argument("name")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the SBOM to this file instead of printing it.")
@flavour_option
def sbom_command(name: str, output: Path | None, flavour: str | None) -> None:
    """Print (or write) the CycloneDX SBOM of provider NAME's image, made by syft from the image."""
    from .. import images
    from ..render import stderr_console

    spec = images.image_spec(name.lower(), flavour)
    path = images.sbom(spec, lambda line: stderr_console.print(f"[dim]{escape(line)}[/]", soft_wrap=True))
    if output is None:
        click.echo(path.read_text(), nl=False)
        return
    output = output.expanduser()
    partial = output.with_name(f".{output.name}.partial")
    try:
        shutil.copyfile(path, partial)
        os.replace(partial, output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise click.UsageError(f"Cannot write {output}: {exc.strerror}") from None
    stderr_console.print(f"wrote {output}")


def _specs(name: str | None, all_images: bool, flavour: str | None) -> list[Any]:
    from providers.provider_factory import available_providers

    from .. import images

    if not name and not all_images:
        raise click.UsageError("Name a provider (see `mf providers`), or pass --all.")
    if all_images:
        return [images.image_spec(n, f) for n in available_providers() for f in images.flavours(n)
                if flavour is None or f == flavour]
    return [images.image_spec(str(name).lower(), flavour)]


def _say(line: str) -> None:
    from ..render import stderr_console

    stderr_console.print(f"[dim]{escape(line)}[/]", soft_wrap=True)


def _show_release(signed: dict[str, Any], reference: str) -> None:
    from ..render import stdout_console

    for entry in signed["manifest"]["images"]:
        stdout_console.print(f"{entry['reference']}@{entry['digest']}")
    stdout_console.print(f"release manifest: {reference} (signed by key {signed['signatures'][0]['key_id']})")


registry_option = shared_registry_option("The registry (default: MF_REGISTRY, else `mf config set registry`).")
key_option = click.option("--key", "key", default=None, metavar="FILE",
                          help="The Ed25519 signing key (default: MF_SIGNING_KEY, else the config's signing_key).")


@images_group.command("push")
@click.argument("name", required=False)
@click.option("--all", "all_images", is_flag=True, help="Every provider image (each flavour).")
@flavour_option
@registry_option
@key_option
@click.option("--entry-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the pushed images' manifest entries here and leave the release to `mf images release` "
                   "(CI matrix jobs).")
def push_command(name: str | None, all_images: bool, flavour: str | None, registry: str | None,
                 key: str | None, entry_out: Path | None) -> None:
    """Push images to the registry, then write, sign and push the release manifest."""
    from .. import registry as reg
    from ..render import LayerProgress, stdout_console

    target = reg.require_registry(registry)
    specs = _specs(name, all_images, flavour)
    with LayerProgress() as layers:
        if entry_out is not None:
            entries = [reg.push_image(spec, target, layers, _say) for spec in specs]
            entry_out.write_text(json.dumps(entries, indent=2) + "\n")
            for entry in entries:
                stdout_console.print(f"{entry['reference']}@{entry['digest']}")
            return
        signed, reference = reg.push(specs, target, key, layers, _say)
    _show_release(signed, reference)


@images_group.command("release")
@click.argument("entries", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@registry_option
@key_option
def release_command(entries: tuple[Path, ...], registry: str | None, key: str | None) -> None:
    """Sign and push the release manifest from the entry files `mf images push --entry-out` wrote."""
    from providers.errors import ImageError

    from .. import registry as reg

    listed: list[dict[str, Any]] = []
    for path in entries:
        try:
            listed += json.loads(path.read_text())
        except ValueError:
            raise ImageError(f"{path} is not an entry file from `mf images push --entry-out`.") from None
    signed, reference = reg.publish_release(listed, reg.require_registry(registry), key, lambda event: None, _say)
    _show_release(signed, reference)


@images_group.command("pull")
@click.argument("name", required=False)
@click.option("--all", "all_images", is_flag=True, help="Every provider image in the release.")
@flavour_option
@registry_option
def pull_command(name: str | None, all_images: bool, flavour: str | None, registry: str | None) -> None:
    """Pull images by the digests in the signed release manifest, and check each image's id."""
    from .. import registry as reg
    from ..render import LayerProgress, stdout_console

    target = reg.require_registry(registry)
    manifest = reg.fetch_release(target)
    if all_images:
        listed = {(e["provider"], e["flavour"]) for e in manifest.get("images", [])}
        specs = [s for s in _specs(None, True, flavour) if (s.provider, s.flavour) in listed]
    else:
        specs = _specs(name, False, flavour)
    with LayerProgress() as layers:
        for spec in specs:
            started = time.monotonic()
            tag = reg.pull(spec, target, layers, _say, manifest)
            stdout_console.print(f"{tag}  verified  ({time.monotonic() - started:.1f} s)")


@images_group.command("verify")
@click.argument("name", required=False)
@click.option("--all", "all_images", is_flag=True, help="Every provider image.")
@flavour_option
@registry_option
@json_option
def verify_command(name: str | None, all_images: bool, flavour: str | None, registry: str | None,
                   as_json: bool) -> None:
    """Check local images against the signed release manifest and the registry's digests."""
    from .. import registry as reg
    from ..render import stdout_console

    rows = reg.verify_local(_specs(name, all_images, flavour), reg.require_registry(registry))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        style = {"verified": "green", "missing": "yellow", "mismatch": "bold red", "unlisted": "yellow"}
        for row in rows:
            stdout_console.print(f"[{style[row['status']]}]{row['status']:8}[/] {row['tag']}  {row['detail']}",
                                 soft_wrap=True)
    if any(row["status"] == "mismatch" for row in rows):
        raise SystemExit(1)


@images_group.command("save")
@click.argument("names", nargs=-1)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle file to write.")
@flavour_option
@key_option
def save_command(names: tuple[str, ...], output: Path, flavour: str | None, key: str | None) -> None:
    """Write images (NAMES, default: every one built here) and a signed manifest into one file, for machines
    with no registry."""
    from .. import bundles, engine
    from ..render import stdout_console

    # no names: every provider image built on this machine
    specs = [s for n in names for s in _specs(n, False, flavour)] if names else [
        s for s in _specs(None, True, flavour) if engine.image_exists(s.tag)]
    path = bundles.save_bundle(specs, output.expanduser(), key, _say)
    stdout_console.print(f"{path} ({path.stat().st_size / 1e6:.0f} MB, {len(specs)} image(s))")


@images_group.command("load")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
def load_command(bundle: Path) -> None:
    """Check a bundle's signature and each image's id against it, then load the images."""
    from providers.errors import ImageError

    from .. import bundles
    from ..render import stdout_console

    if not bundle.is_file():
        raise ImageError(f"Bundle not found: {bundle}", "Check the path.")
    for tag in bundles.load_bundle(bundle, _say):
        stdout_console.print(f"{tag}  verified and loaded")


@images_group.command("keygen")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder for modelforge-signing.key and .pub.")
def keygen_command(output: Path) -> None:
    """Make an Ed25519 key pair for signing release manifests (keep the .key secret)."""
    from .. import signing
    from ..render import stdout_console

    private, public = signing.generate(output.expanduser())
    stdout_console.print(f"private key: {private} (mode 600; give it to CI as MF_SIGNING_KEY)")
    stdout_console.print(f"public key:  {public} (users trust it with `mf images trust {public.name}`)")


@images_group.command("trust")
@click.argument("public_key", type=click.Path(dir_okay=False, path_type=Path))
def trust_command(public_key: Path) -> None:
    """Trust a publisher's public key for release manifests."""
    from .. import signing
    from ..render import stdout_console

    target = signing.trust(public_key.expanduser())
    stdout_console.print(f"trusted key {target.stem} ({target})")
