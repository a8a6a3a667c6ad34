"""@secrets with a JSON secret of AWS Secrets Manager: each key becomes an environment
variable of the step, resolved by Metaflow in the task with the job's role."""

import hashlib
import os

from metaflow import FlowSpec, secrets, step


class SecretsFlow(FlowSpec):
    @secrets(sources=[{"type": "aws-secrets-manager", "id": "database-config"}])
    @step
    def start(self):
        # Metaflow exports a JSON secret's keys as they are: username, password, host.
        self.db_user = os.environ["username"]
        self.db_host = os.environ["host"]
        # Never store a secret: only a digest, to prove it arrived.
        self.password_sha256 = hashlib.sha256(os.environ["password"].encode()).hexdigest()
        self.next(self.end)

    @step
    def end(self):
        print("connected as", self.db_user, "to", self.db_host)


if __name__ == "__main__":
    SecretsFlow()
