"""A ModelForge plugin: the CustomProvider of the provider-system design document."""
