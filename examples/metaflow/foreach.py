"""A foreach, nested: a sweep over learning rates, each over seeds."""

from metaflow import FlowSpec, Parameter, batch, step


class ForeachFlow(FlowSpec):
    rates = Parameter("rates", default="0.1,0.01,0.001", help="learning rates, comma-separated")

    @step
    def start(self):
        self.learning_rates = [float(rate) for rate in self.rates.split(",")]
        self.next(self.train, foreach="learning_rates")

    @step
    def train(self):
        self.rate = self.input
        self.seeds = [1, 2]
        self.next(self.trial, foreach="seeds")

    @batch(cpu=1, memory=1024)
    @step
    def trial(self):
        self.score = round(self.rate * 100 + self.input, 6)
        print("trial", self.rate, self.input, self.score)
        self.next(self.join_seeds)

    @step
    def join_seeds(self, inputs):
        self.rate = inputs[0].rate
        self.best_seed_score = max(trial.score for trial in inputs)
        self.next(self.join_rates)

    @step
    def join_rates(self, inputs):
        self.scores = {task.rate: task.best_seed_score for task in inputs}
        self.next(self.end)

    @step
    def end(self):
        print("scores", self.scores)


if __name__ == "__main__":
    ForeachFlow()
