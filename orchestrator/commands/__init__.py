"""One module per `mf` command group; shared options live in ``options``."""
