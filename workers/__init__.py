"""Thin service shells that wire Kafka, Redis and Prometheus around ``inspector`` and ``mla``.

* ``workers.kafka``: the delivery layer every worker reads and writes through (group consumer and its
  kafka-python workarounds, the at-least-once checkpoint, delivery metrics, topic creation).
* ``workers.inspection``, ``workers.medical``, ``workers.vqa``: the workers, each decode → domain →
  model → outcomes for the checkpoint; ``workers.shell`` runs them.
* ``workers.gateway``: cameras to Kafka; ``workers.genicam`` and ``workers.genicam_camera``: GenICam
  (GigE Vision) rigs through Aravis; ``workers.fake_cameras``: Aravis's camera simulator for the tests
  and ``workers.camera_bench``. ``workers.clients``, ``workers.kafka_login``: clients from settings.
  ``workers.stores``: Redis sinks. ``workers.commands``: the CLI.

Imports go one way: ``workers`` may import ``inspector`` and ``mla``, never the reverse.
"""

from workers.errors import WorkerError

__all__ = ["WorkerError"]
