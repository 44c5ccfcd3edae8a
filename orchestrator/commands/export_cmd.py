"""`mf export RUN --format gguf --quantize q8_0 --output DIR`: a fine-tune to GGUF, across two images."""

from __future__ import annotations

from pathlib import Path

import click

from .options import json_option, registry_option, renderer_for


@click.command("export")
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The base model (a Hugging Face folder); default: the one the run trained on.")
@click.option("--adapter", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A LoRA adapter folder; default: RUN/adapter.")
@click.option("--format", "fmt", type=click.Choice(["gguf"]), default="gguf", show_default=True)
@click.option("--quantize", "-q", default="q8_0", show_default=True, metavar="TYPES",
              help="Comma-separated: f16, q8_0, q6_k, q5_k_m, q4_k_m, ... (one file each).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the GGUF files, the Ollama Modelfile and manifest.json.")
@click.option("--keep-intermediate", is_flag=True, help="Keep the merged model and the f16 GGUF.")
@click.option("--overwrite", is_flag=True, help="Replace an export already in --output.")
@registry_option("Pull missing images from this registry.")
@json_option
def export_command(run: Path | None, model: Path | None, adapter: Path | None, fmt: str, quantize: str,
                   output: Path, keep_intermediate: bool, overwrite: bool, registry: str | None,
                   as_json: bool) -> None:
    """Export a finished training RUN (or --model with --adapter) to GGUF for llama.cpp and Ollama.

    \b
    mf export ./run1 --quantize q8_0 --output ./run1-gguf
    mf export --model ./base --adapter ./adapter --quantize q4_k_m,f16 --output ./out
    mf run --provider gguf load --model ./run1-gguf/model-q8_0.gguf --prompt "..."
    ollama create my-model -f ./run1-gguf/Modelfile
    """
    from ..export import ExportRequest, parse_types, run_export

    request = ExportRequest(run=run, model=model, adapter=adapter, quantize=parse_types(quantize), output=output,
                            keep_intermediate=keep_intermediate, overwrite=overwrite, registry=registry)
    renderer = renderer_for(as_json)
    from ..runs import recorded

    with recorded("export", provider="huggingface", model=str(model or run), output=str(output),
                  config={"quantize": request.quantize, "adapter": str(adapter) if adapter else None},
                  lazy=False) as record:
        result = run_export(request, renderer.on_event, renderer.on_build)
        record.finished(result)
    if as_json:
        import json

        click.echo(json.dumps({"event": "result", "action": "export", **result}))
        return
    for item in result["files"]:
        click.echo(f"{result['output']}/{item['file']}  {item['bytes'] / 1e6:.1f} MB  {item['quantization']}")
    click.echo(f"{result['modelfile']}  (ollama create NAME -f {result['modelfile']})")
