"""A branch and its join: two steps run in parallel and meet again."""

from metaflow import FlowSpec, batch, step


class BranchJoinFlow(FlowSpec):
    @step
    def start(self):
        self.base = 10
        self.next(self.double, self.square)

    @batch(cpu=1, memory=2048)
    @step
    def double(self):
        self.value = self.base * 2
        self.next(self.join)

    @batch(cpu=1, memory=2048)
    @step
    def square(self):
        self.value = self.base**2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(branch.value for branch in inputs)
        self.merge_artifacts(inputs, exclude=["value"])
        self.next(self.end)

    @step
    def end(self):
        print("total", self.total, "base", self.base)


if __name__ == "__main__":
    BranchJoinFlow()
