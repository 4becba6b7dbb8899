"""Streaming front end: protocol chunks of many streams in, per-stream rolling log-mel windows out.

Modules, one concept each: :mod:`.audio` (downmix, streaming resampler), :mod:`.continuity`
(where a chunk belongs in its stream), :mod:`.framer` (batched log-mel frames), :mod:`.ring`
(a stream's rolling frame buffer) and :mod:`.bank` (all streams together). See docs/frontend.md.
"""

from streamd.frontend.bank import COUNTER_NAMES, FrontendBank, StreamState
from streamd.frontend.ring import LOG_SILENCE

__all__ = ["COUNTER_NAMES", "LOG_SILENCE", "FrontendBank", "StreamState"]
