"""e2e/backend/app.py under uvicorn, on $PORT, recording when a signal
asks it to stop: the same-service tests (e2e/samesvc_test.go) compare that
time with when authgate closed its WebSockets.

  SIGNAL_LOG=/path /usr/bin/python3 recording.py

Each SIGTERM or SIGINT appends "SIGNUM UNIX_NANOSECONDS" to SIGNAL_LOG
before uvicorn's own handling; SIGUSR1 appends too and is otherwise
ignored (forwarding test). GET /slow?ms=N answers after N ms: a request
in flight when authgate is told to stop.
"""

import asyncio
import os
import signal
import sys
import time

import uvicorn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app import app  # noqa: E402

LOG = os.environ["SIGNAL_LOG"]


@app.get("/slow")
async def slow(ms: int = 1000):
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


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
    config = uvicorn.Config(app, host="127.0.0.1", port=int(os.environ["PORT"]), ws="websockets",
                            log_level="info", access_log=False)
    RecordingServer(config).run()
