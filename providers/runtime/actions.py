"""The actions a job runs inside a provider image: validate, load and train."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..contract import JobSpec
from ..errors import ModelAccessError, UnsupportedActionError
from ..events import EventWriter


def unsupported_action(provider_name: str, action: str, supported: tuple[str, ...]) -> UnsupportedActionError:
    """The error for an action a provider does not have; for train it names the providers that train."""
    if action == "serve":
        from ..provider_factory import providers_supporting

        servers = providers_supporting("serve")
        return UnsupportedActionError(
            f"The {provider_name} provider cannot serve: it has no generate_stream method. Providers that serve: "
            f"{servers}.",
            f"Use `mf serve --provider {servers[0]} ...`, or add generate_stream to the provider "
            "(docs/custom-providers.md)." if servers else "Add generate_stream to the provider (docs/custom-providers.md).",
        )
    if action == "train":
        from ..provider_factory import providers_supporting

        trainers = providers_supporting("train")
        return UnsupportedActionError(
            f"The {provider_name} provider does not train. Providers that train: {trainers}.",
            f"Use `mf run --provider {trainers[0]} train ...`." if trainers else "",
        )
    return UnsupportedActionError(
        f"The {provider_name} provider does not support {action!r}.",
        f"Supported actions: {', '.join(supported)}.",
    )


def check_action_supported(provider_name: str, provider: Any, action: str) -> None:
    """Raise unless ``provider`` (a class or an instance) supports ``action``.

    Providers that do not declare ``actions`` (plain protocol implementations) get validate and load;
    serve is for the providers that implement the optional ``generate_stream``.
    """
    if action == "check":  # mf providers check: every provider can be checked
        return
    if action == "serve":
        if not callable(getattr(provider, "generate_stream", None)):
            raise unsupported_action(provider_name, action, ())
        return
    supported = tuple(getattr(provider, "actions", ("validate", "load")))
    if action not in supported:
        raise unsupported_action(provider_name, action, supported)


def validate(provider: Any, job: JobSpec, events: EventWriter) -> dict[str, Any]:
    events.stage("validate", f"checking {job.model}")
    if not provider.validate_model_access(job.model, job.model_class):
        raise ModelAccessError(
            f"The {provider.get_provider_name()} provider cannot access {job.model}.",
            "Check the model path or reference.",
        )
    describe = getattr(provider, "describe_model", None)
    details = describe(job.model, job.model_class) if callable(describe) else {}
    return {"model": job.model, "valid": True, **details}


def load(provider: Any, job: JobSpec, events: EventWriter) -> dict[str, Any]:
    provider.validate_model_access(job.model, job.model_class)
    events.stage("load", f"loading {job.model}")
    started = time.perf_counter()
    model = provider.load_model(
        job.model,
        job.model_class,
        quantization_config=job.quantization_config,
        device_map=job.device_map,
    )
    tokenizer = provider.load_tokenizer(job.model)
    load_seconds = time.perf_counter() - started
    result: dict[str, Any] = {"model": job.model, "load_seconds": round(load_seconds, 3)}
    if job.quantization_config and hasattr(model, "modules"):  # bitsandbytes' layers, counted
        from .tasks.quantized import quantized_layers

        result["quantized_layers"] = quantized_layers(model)
    device = getattr(provider, "device_of", None)
    if callable(device):
        result["device"] = device(model)
    backend = getattr(provider, "backend_of", None)
    if callable(backend):
        result["backend"] = backend(model)
    events.metric("load_seconds", load_seconds)
    if job.prompt is not None:
        events.stage("generate", f"up to {job.max_new_tokens} new tokens")
        generation = provider.generate(
            model, tokenizer, job.prompt, max_new_tokens=job.max_new_tokens, temperature=job.temperature
        )
        result.update(prompt=job.prompt, **generation)
        if generation.get("seconds"):
            events.metric("tokens_per_second", generation["new_tokens"] / generation["seconds"])
    return result


def train(provider: Any, job: JobSpec, events: EventWriter) -> dict[str, Any]:
    result: dict[str, Any] = provider.train(job, events)
    return result


def export(provider: Any, job: JobSpec, events: EventWriter) -> dict[str, Any]:
    from .export import run_export

    return run_export(provider, job, events)


def serve(provider: Any, job: JobSpec, events: EventWriter) -> dict[str, Any]:
    from .serve import serve as run_server

    return run_server(provider, job, events)


#: what the runtime runs; `export` steps are driven by `mf export`, not `mf run`
ACTIONS: dict[str, Callable[[Any, JobSpec, EventWriter], dict[str, Any]]] = {
    "validate": validate,
    "load": load,
    "train": train,
    "export": export,
    "serve": serve,
}


def run_action(provider: Any, job: JobSpec, events: EventWriter) -> dict[str, Any]:
    check_action_supported(job.provider, provider, job.action)
    return ACTIONS[job.action](provider, job, events)
