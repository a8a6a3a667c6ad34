"""Multi-node parallel: a gang of 3 nodes (a Batch multi-node job), each knowing its rank."""

from metaflow import FlowSpec, batch, current, parallel, step


class ParallelTrainingFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.distributed_training, num_parallel=3)

    @batch(cpu=1, memory=2048)
    @parallel
    @step
    def distributed_training(self):
        self.rank = current.parallel.node_index
        self.num_nodes = current.parallel.num_nodes
        print("node", self.rank, "of", self.num_nodes)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.ranks = sorted(node.rank for node in inputs)
        self.next(self.end)

    @step
    def end(self):
        print("Training complete on ranks", self.ranks)


if __name__ == "__main__":
    ParallelTrainingFlow()
