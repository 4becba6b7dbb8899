"""`python tests/daemon_proc.py TRACK_ID...`: the daemon with the test fingerprinter, for the restart test.

The config comes as JSON of dotted keys in $STREAMD_TEST_CONFIG; the catalog is built in memory from
the named corpus tracks with the same fingerprinter as the test's.

$STREAMD_TEST_CRASH=``outbox:SECONDS`` makes the process SIGKILL itself in the narrowest window of
delivery: when a batch of decisions that starts a play at stream time >= SECONDS has had its state
documents acknowledged (they list its events as outbox) and none of those events has been sent.
"""

import json
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from daemon_doubles import ProjectionFingerprinter  # noqa: E402
from daemon_helpers import catalog_searcher  # noqa: E402

from streamd import dataset  # noqa: E402
from streamd.config import load_config  # noqa: E402
from streamd.daemon.pipeline import STARTED  # noqa: E402
from streamd.daemon.runner import Daemon  # noqa: E402
from streamd.logs import configure_logging  # noqa: E402


class OutboxCrashDaemon(Daemon):
    """Dies right after the state flush of the first batch that starts a play at or after ``after_s``."""

    def __init__(self, *args, after_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_s = after_s
        self.armed = False

    def _publish(self, decisions):
        self.armed = any(d.event.type == STARTED and d.document["start_s"] >= self.after_s for d in decisions)
        super()._publish(decisions)

    def _flush(self):
        super()._flush()
        if self.armed:  # the first flush of _publish: states durable, events not sent
            print("crashing between the state flush and the events", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    config = load_config(overrides=json.loads(os.environ["STREAMD_TEST_CONFIG"]))
    configure_logging(config, fmt="json", level="INFO")
    wanted = set(sys.argv[1:])
    tracks = [t for t in dataset.load_split().all() if t.track_id in wanted]
    fp = ProjectionFingerprinter()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    crash = os.environ.get("STREAMD_TEST_CRASH", "")
    options = dict(fingerprinter=fp, searcher=catalog_searcher(fp, tracks), stop=stop, http=False)
    if crash.startswith("outbox:"):
        return OutboxCrashDaemon(config, after_s=float(crash.split(":", 1)[1]), **options).run()
    return Daemon(config, **options).run()


if __name__ == "__main__":
    sys.exit(main())
