"""One inference process for all the workers of ``labelclean serve --workers N``.

    with SharedInference(settings) as shared:         # started before uvicorn's workers
        os.environ["LABELCLEAN_INFERENCE_SOCKET"] = str(shared.socket_path)
        uvicorn.run(..., workers=N)                    # each worker connects to it

As Triton runs one model instance for all its HTTP front-end threads and BentoML one runner for
all its API-server workers: the model is loaded once per host (once per GPU), and the dynamic
batcher gathers requests from every worker into the same batches. The process listens on a unix
socket in a fresh directory only this user can open, and is restarted when it dies (after 1 s,
doubling up to 30 s while it keeps dying; a process that ran a minute starts the count afresh);
the workers answer 503 meanwhile and reconnect. It exits when ``serve`` closes its lifeline (on
the way out, or by dying), and the directory is removed on the way out.

Runs in the ``serve`` process, which uvicorn's multiprocess supervisor keeps busy, so the
restarts happen on a thread.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from ...settings import Settings
from .client import RESTART_DELAYS, backoff, inference_process

log = logging.getLogger("labelclean.service")
HEALTHY_AFTER_S = 60.0  # a process that lived this long resets the back-off


class SharedInference:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._dir = Path(tempfile.mkdtemp(prefix="labelclean-"))  # mode 0700
        self.socket_path = self._dir / "inference.sock"
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # spawn vs stop
        self._process: subprocess.Popen[bytes] | None = None
        self._lifeline: socket.socket | None = None
        self._thread = threading.Thread(target=self._supervise, name="inference", daemon=True)

    def __enter__(self) -> SharedInference:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        argv, env = inference_process(
            self.settings, "--listen", str(self.socket_path), "--lifeline", str(theirs.fileno())
        )
        try:
            self._process = subprocess.Popen(
                argv, pass_fds=(theirs.fileno(),), env=env, start_new_session=True
            )
        finally:
            theirs.close()
        self._lifeline = ours

    def _supervise(self) -> None:
        failures = 0
        while True:
            assert self._process is not None
            started = time.monotonic()
            code = self._process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                failures = 0
            delay = backoff(RESTART_DELAYS, failures)
            failures += 1
            log.error("the inference process exited (code %s); restarting in %g s", code, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                if self._lifeline is not None:
                    self._lifeline.close()
                self._spawn()

    def forward_signal(self, sig: int) -> bool:
        """Send ``sig`` to the inference process; False while there is none (restarting)."""
        with self._lock:
            if self._process is None or self._stopping.is_set():
                return False
            self._process.send_signal(sig)  # nothing once it has exited
            return self._process.returncode is None

    def stop(self, timeout: float = 10.0) -> None:
        """Close the lifeline (the inference process exits on it), wait, kill if it hangs."""
        with self._lock:
            self._stopping.set()
            if self._lifeline is not None:
                self._lifeline.close()
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the inference process did not exit in %g s: killing it", timeout)
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
