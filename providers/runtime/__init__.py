"""The code that runs inside a provider image: ``python -m providers.runtime [SPEC]`` reads a job spec,
runs its action (``actions``: validate, load, train, export) with the registered provider, and speaks
the contract on stdout (``entrypoint``). ``training`` and ``export`` are the shared train and export
actions. Importing this package imports no ML library: `mf` imports it on the host too."""

from .entrypoint import DEBUG_ENV, STOP_ON_STDIN_EOF_ENV, main, run_job

__all__ = ["DEBUG_ENV", "STOP_ON_STDIN_EOF_ENV", "main", "run_job"]
