"""``python -m providers.runtime [SPEC]``: the ENTRYPOINT of every provider image."""

import sys

from .entrypoint import main

if __name__ == "__main__":
    sys.exit(main())
