"""The inspection domain: frames, calibration, crack measurement, verdicts, evaluation and the CLI."""

from inspector.config import Settings, load_settings
from inspector.errors import ConfigError, InspectorError

__all__ = ["ConfigError", "InspectorError", "Settings", "__version__", "load_settings"]
__version__ = "0.1.0"
