"""Small helpers shared by the integration tests (imported as `helpers`; pytest puts this
directory on sys.path)."""

import threading
import time


def wait_for(predicate, timeout=5.0, interval=0.05, what="condition"):
    """Poll predicate() until it returns a truthy value, and return that value; AssertionError
    naming `what` (and the last value seen) after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def stays(predicate, duration=1.0, interval=0.05, what="condition"):
    """Assert predicate() stays truthy for duration seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        value = predicate()
        assert value, f"{what} stopped holding (got {value!r})"
        time.sleep(interval)


class Background:
    """Run fn(*args) in a thread; .result() joins and returns its value or re-raises its
    exception in the test's thread."""

    def __init__(self, fn, *args, **kwargs):
        self._value = None
        self._error = None
        self.finished_at = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as e:  # handed to the test thread in result()
            self._error = e
        self.finished_at = time.monotonic()

    def done(self):
        return not self._thread.is_alive()

    def result(self, timeout=30.0):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"background task still running after {timeout}s"
        if self._error is not None:
            raise self._error
        return self._value

    def error(self, timeout=30.0):
        """Join and return the exception the task raised (AssertionError if none)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"background task still running after {timeout}s"
        assert self._error is not None, f"expected an error, task returned {self._value!r}"
        return self._error
