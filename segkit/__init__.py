"""segkit: U-Net segmentation with a joint severity grader for medical volumes."""

import os

# albumentations checks PyPI for updates at import; these machines must never phone home.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

from segkit.errors import SegkitError  # noqa: E402

__all__ = ["SegkitError", "__version__"]
