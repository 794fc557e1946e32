"""stackcheck: verify, load and break containerized service stacks.

Importing the package applies its testcontainers defaults (see ``stackcheck.tcdefaults``).
"""

from stackcheck import tcdefaults
from stackcheck.engine import EngineInfo, ensure_engine
from stackcheck.errors import (
    EngineError,
    ImageBuildError,
    ImageError,
    ImageMissingError,
    StackcheckError,
)
from stackcheck.images import Catalog, ImageBuilder

tcdefaults.apply()

__all__ = [
    "Catalog",
    "EngineError",
    "EngineInfo",
    "ImageBuildError",
    "ImageBuilder",
    "ImageError",
    "ImageMissingError",
    "StackcheckError",
    "ensure_engine",
]
