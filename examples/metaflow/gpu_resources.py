"""Resources: a GPU training step, a memory-tuned step and tagged jobs, each @batch option
mapped to the Flow's step field by field."""

import os

from metaflow import FlowSpec, Parameter, batch, step


class GpuResourcesFlow(FlowSpec):
    epochs = Parameter("epochs", default=2, help="training epochs")

    @step
    def start(self):
        self.next(self.gpu_training)

    @batch(cpu=8, memory=32000, gpu=1, queue="gpu-queue")
    @step
    def gpu_training(self):
        # 8 CPUs, 32 GB of memory, 1 GPU: Batch sets NVIDIA_VISIBLE_DEVICES to the GPU it gave.
        devices = [d for d in os.environ.get("NVIDIA_VISIBLE_DEVICES", "").split(",") if d]
        self.gpus = len(devices)
        self.losses = [round(1.0 / (epoch + 1), 4) for epoch in range(self.epochs)]
        self.next(self.memory_intensive)

    @batch(memory=16000, shared_memory=8000, max_swap=4000, swappiness=60)
    @step
    def memory_intensive(self):
        self.large = sum(range(1000))
        self.next(self.tagged_step)

    @batch(aws_batch_tags={"project": "ml-training", "team": "data-science", "cost-center": "research"})
    @step
    def tagged_step(self):
        self.result = {"gpus": self.gpus, "final_loss": self.losses[-1], "large": self.large}
        self.next(self.end)

    @step
    def end(self):
        print("result", self.result)


if __name__ == "__main__":
    GpuResourcesFlow()
