"""Metaflow's S3 datatools: one step stores files, the next reads them back."""

import os

from metaflow import S3, FlowSpec, step


class S3DataFlow(FlowSpec):
    @step
    def start(self):
        with open("local_file.csv", "w") as f:
            f.write("id,value\n1,10\n2,20\n")
        with S3(run=self) as s3:
            s3.put_files([("remote_file.csv", "local_file.csv")])
            s3.put("notes/readme.txt", "stored with metaflow.S3")
        self.next(self.process)

    @step
    def process(self):
        with S3(run=self) as s3:
            # Metaflow's S3 reads several keys with get_many (the seed page's get_files).
            files = s3.get_many(["remote_file.csv"])
            with open(files[0].path) as f:
                rows = f.read().strip().splitlines()[1:]
            self.notes = s3.get("notes/readme.txt").text
            self.listed = sorted(obj.key for obj in s3.list_recursive())
        self.total = sum(int(row.split(",")[1]) for row in rows)
        self.next(self.end)

    @step
    def end(self):
        print("Processing complete", self.total)


if __name__ == "__main__":
    S3DataFlow()
