"""Failure handling: @retry retries a flaky step, @catch keeps a failing step from failing
the run, @timeout stops a step that hangs (and @catch records that too)."""

import time

from metaflow import FlowSpec, catch, current, retry, step, timeout


class RetryCatchTimeoutFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.flaky)

    @retry(times=2)
    @step
    def flaky(self):
        # Fails on the first attempt, succeeds on the second.
        if current.retry_count == 0:
            raise RuntimeError("transient failure")
        self.flaky_attempt = current.retry_count
        self.next(self.broken)

    @catch(var="broken_error")
    @step
    def broken(self):
        self.never = 1 / 0
        self.next(self.slow)

    @catch(var="slow_error")
    @timeout(seconds=5)
    @step
    def slow(self):
        time.sleep(60)
        self.next(self.end)

    @step
    def end(self):
        print("flaky attempt", self.flaky_attempt)
        print("broken:", self.broken_error)
        print("slow:", self.slow_error)


if __name__ == "__main__":
    RetryCatchTimeoutFlow()
