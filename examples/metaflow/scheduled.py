"""A flow that runs by itself every day at midnight (UTC)."""

from metaflow import FlowSpec, schedule, step


@schedule(cron="0 0 * * *")
class ScheduledFlow(FlowSpec):
    @step
    def start(self):
        self.data = list(range(5))
        self.next(self.process)

    @step
    def process(self):
        self.result = sum(self.data)
        self.next(self.end)

    @step
    def end(self):
        print(f"Result: {self.result}")


if __name__ == "__main__":
    ScheduledFlow()
