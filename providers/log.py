"""The ``modelforge`` logger, shared by the host and the images.

Inside a container, ``providers.runtime`` forwards its records to the host as ``log`` events.
"""

import logging

logger = logging.getLogger("modelforge")
logger.addHandler(logging.NullHandler())
