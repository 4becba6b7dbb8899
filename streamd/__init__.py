"""streamd: real-time music recognition for broadcast monitoring.

Pipeline: ingest (audio → Kafka chunks) → frontend (per-stream log-mel) → model (binary codes)
→ store (Hamming search in a Redis-backed catalog) → daemon (decisions) → events / metrics.
"""

__version__ = "0.1.0"

from streamd.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config", "__version__"]
