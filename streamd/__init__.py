"""streamd: real-time music recognition for broadcast monitoring.

Pipeline: ingest (audio → Kafka chunks) → frontend (per-stream log-mel) → model (binary codes)
→ store (Hamming search in a Redis-backed catalog) → daemon (decisions) → events / metrics.
"""

import os

# Idle OpenMP threads (numba's search threads; torch's) sleep instead of spinning. By default
# libgomp spins each of them for milliseconds after every parallel region: on a 2-core machine
# shared with Kafka, a search's spinning worker took the core the model's second batch part was
# running on (bench/RESULTS.md, "Soak", session 16). Read when libgomp loads, so before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from streamd.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config", "__version__"]
