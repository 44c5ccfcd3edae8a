"""The ModelForge error tree: one root, specific leaves, each with a kind and an exit code.

The kind and exit code are part of the container contract (see ``providers.contract``): an
error raised inside an image crosses the wall as an ``error`` event and is raised again on the
host as the same class.
"""

from __future__ import annotations


class ModelForgeError(Exception):
    """Root of every error ModelForge raises on purpose.

    ``message`` says what went wrong in one line; ``hint`` says what to do next.
    """

    kind = "internal"
    exit_code = 1
    default_hint = ""
    #: True once the error has been shown (as a job's error event), so the CLI does not repeat it.
    reported = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ModelForgeError):
    """A job, option or config file is invalid."""

    kind = "configuration"
    exit_code = 2


class ModelAccessError(ModelForgeError):
    """The model cannot be found, read or parsed."""

    kind = "model_access"
    exit_code = 3


class GatedModelError(ModelAccessError):
    """The model exists but needs accepted terms or a token."""

    kind = "gated_model"
    exit_code = 4


class ProviderError(ModelForgeError):
    """A provider is unknown, broken, or failed while doing its work."""

    kind = "provider"
    exit_code = 5


class UnsupportedActionError(ProviderError):
    """The provider does not implement the requested action (for example, gguf cannot train)."""

    kind = "unsupported_action"
    exit_code = 6


class ImageError(ModelForgeError):
    """A provider image is missing, cannot be built, or has no recipe."""

    kind = "image"
    exit_code = 7


class EngineError(ModelForgeError):
    """The Docker engine cannot be reached."""

    kind = "engine"
    exit_code = 8
    default_hint = "Start the engine (`sudo scripts/ensure-docker.sh`) and try again."


class ContainerError(ModelForgeError):
    """A job container failed without reporting a ModelForge error of its own."""

    kind = "container"
    exit_code = 9

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        exit_status: int | None = None,
        image: str | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.exit_status = exit_status
        self.image = image
        self.stderr_tail = stderr_tail


class OutOfMemoryError(ContainerError):
    """The job container was killed by the kernel's OOM killer."""

    kind = "out_of_memory"
    exit_code = 10
    default_hint = "Give the engine more memory, use a smaller or more quantized model, or lower the batch size."


class InterruptedJobError(ModelForgeError):
    """The user stopped the job (Ctrl-C or SIGTERM)."""

    kind = "interrupted"
    exit_code = 130


ERROR_CLASSES: dict[str, type[ModelForgeError]] = {
    cls.kind: cls
    for cls in (
        ModelForgeError,
        ConfigurationError,
        ModelAccessError,
        GatedModelError,
        ProviderError,
        UnsupportedActionError,
        ImageError,
        EngineError,
        ContainerError,
        OutOfMemoryError,
        InterruptedJobError,
    )
}


def error_from_kind(kind: str, message: str, hint: str | None = None) -> ModelForgeError:
    """Rebuild the error a container reported (unknown kinds become the root class)."""
    return ERROR_CLASSES.get(kind, ModelForgeError)(message, hint)
