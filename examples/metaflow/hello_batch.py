"""A plain @batch flow: one step on AWS Batch with default resources, a Parameter."""

from metaflow import FlowSpec, Parameter, batch, step


class HelloBatchFlow(FlowSpec):
    greeting = Parameter("greeting", default="hello", help="what to say")
    times = Parameter("times", default=2, help="how many times")

    @step
    def start(self):
        self.words = [self.greeting] * self.times
        self.next(self.compute_step)

    @batch
    @step
    def compute_step(self):
        self.result = " ".join(self.words).upper()
        print("computed", self.result)
        self.next(self.end)

    @step
    def end(self):
        print(f"Result: {self.result}")


if __name__ == "__main__":
    HelloBatchFlow()
