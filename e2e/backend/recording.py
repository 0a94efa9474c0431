"""e2e/backend/app.py under uvicorn, on $PORT, recording when a signal
asks it to stop: the same-service tests (e2e/samesvc_test.go) compare that
time with when authgate closed its WebSockets.

  SIGNAL_LOG=/path /usr/bin/python3 recording.py

Each SIGTERM or SIGINT appends "SIGNUM UNIX_NANOSECONDS" to SIGNAL_LOG
before uvicorn's own handling; SIGUSR1 appends too and is otherwise
ignored (forwarding test).
"""

import os
import signal
import sys
import time

import uvicorn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
LOG = os.environ["SIGNAL_LOG"]


def record(sig):
    with open(LOG, "a") as f:
        f.write("%d %d\n" % (sig, time.time_ns()))
    print("recording backend: got signal %d at %s" % (sig, time.strftime("%H:%M:%S", time.gmtime()) + ".%03dZ" % (time.time_ns() // 1000000 % 1000)),
          file=sys.stderr, flush=True)


class RecordingServer(uvicorn.Server):
    def handle_exit(self, sig, frame):
        record(sig)
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, lambda sig, frame: record(sig))
    config = uvicorn.Config("app:app", host="127.0.0.1", port=int(os.environ["PORT"]), ws="websockets",
                            log_level="info", access_log=False)
    RecordingServer(config).run()
