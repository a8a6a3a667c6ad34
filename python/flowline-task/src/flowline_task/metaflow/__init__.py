"""Metaflow flows on Flowline, unmodified.

* `graph` reads a flow file with Metaflow itself (its graph, its linter, its decorators and
  parameters) and describes it as JSON, which `flowline import metaflow` turns into a Flow; it
  also builds the flow's code package.
* `entrypoint` is what each converted step runs: it maps Flowline's task variables to
  Metaflow's own `step` command.
* `pull` copies a Flowline run's task metadata from the datastore to a reader's local
  metadata, so that Metaflow's client (`Run("Flow/<run id>")`) and `resume` see it.

Each module is standalone (standard library, Metaflow and boto3 only, no import of its
siblings or of `flowline_task`): `flowline import metaflow` runs `graph.py` from a copy it
carries, and the code package carries `entrypoint.py` to a task whose image holds Metaflow and
nothing of Flowline.
"""
