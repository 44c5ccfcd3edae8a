"""ModelForge's ``schemas`` package: :mod:`ModelForge.schemas.training_schemas`."""
