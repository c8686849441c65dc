"""kiln from Python: the binary this package installed, and the adapters that
put it where ML pipelines build images.

- :mod:`kiln_build.zenml`: the ZenML image-builder flavor ``kiln``.
- :mod:`kiln_build.flyte`: the Flyte 2 image builder ``kiln`` (entry point
  ``flyte.plugins.image_builders``) and its image checker.

Both shell out to the ``kiln`` command line (``kiln build``, ``kiln image
exists``, ``kiln flavor validate``); nothing here links against kiln.
"""

from kiln_build._cli import KilnError, kiln_executable, run_kiln

__all__ = ["KilnError", "kiln_executable", "run_kiln"]
