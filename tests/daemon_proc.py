"""`python tests/daemon_proc.py TRACK_ID...`: the daemon with the test fingerprinter, for the restart test.

The config comes as JSON of dotted keys in $STREAMD_TEST_CONFIG; the catalog is built in memory from
the named corpus tracks with the same fingerprinter as the test's."""

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
from streamd.daemon.runner import Daemon  # noqa: E402
from streamd.logs import configure_logging  # noqa: E402


def main() -> int:
    config = load_config(overrides=json.loads(os.environ["STREAMD_TEST_CONFIG"]))
    configure_logging(config, fmt="json", level="INFO")
    wanted = set(sys.argv[1:])
    tracks = [t for t in dataset.load_split().all() if t.track_id in wanted]
    fp = ProjectionFingerprinter()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return Daemon(config, fingerprinter=fp, searcher=catalog_searcher(fp, tracks), stop=stop, http=False).run()


if __name__ == "__main__":
    sys.exit(main())
