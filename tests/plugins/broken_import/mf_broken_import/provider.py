"""A plugin whose module cannot be imported (a dependency that is not installed)."""

import a_package_that_is_not_installed  # noqa: F401


class BrokenProvider:
    pass
