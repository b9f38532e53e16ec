"""Waiting for a `hearth serve` under test: shared by the tests/server scripts."""

import time
import urllib.error
import urllib.request


def wait_ready(url, timeout=120.0):
    """Returns once `url`/health answers 200 (the model is loaded); raises after
    `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")
