"""ModelForge's ``providers`` package: the registry lives in :mod:`ModelForge.providers.provider_factory`."""
