"""Code written for ModelForge 3.x runs here unchanged: this package gives it the modules it imports.

- ``ModelForge.exceptions``: ModelForge's exception tree, each class also the matching error of this
  project (``providers.errors``), so a raise inside an image reaches the user as that error's kind and
  exit code.
- ``ModelForge.logging_config.logger``: the ``modelforge`` logger (inside an image its records reach the
  host as ``log`` events).
- ``ModelForge.providers.provider_factory``: ``PROVIDER_REGISTRY``, ``create_provider`` and
  ``ProviderFactory`` over this project's registry (entry points).
- ``ModelForge.schemas.training_schemas.VALID_PROVIDERS``: the registered names, read live.

Nothing here imports an ML library.
"""
