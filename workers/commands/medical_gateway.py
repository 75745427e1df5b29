"""``inspector medical-gateway``: receive studies from a PACS (DICOM C-STORE) and publish them as study requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry

from inspector.commands.common import console, fail
from workers.clients import kafka_admin, kafka_producer
from workers.commands.service import start_service
from workers.errors import WorkerError
from workers.kafka.topics import TopicSpec, with_admin
from workers.kafka.topics import ensure_topics as create
from workers.medical_gateway import GatewayMetrics, MedicalGateway


def medical_gateway(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings: the `pacs:` section, Kafka, metrics.")
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic of study requests (the medical worker's).")] = "medical.studies",
    dlq: Annotated[str, typer.Option(help="Dead-letter topic for refused instances.")] = "medical.dlq",
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of a study topic created here.")] = 4,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Be a DICOM C-STORE SCP for a PACS or modality: each complete study becomes a claim-check request.

    Listens on pacs.bind_address:pacs.port as AE pacs.ae_title, for the calling AE titles in
    pacs.allowed_calling_aets only. Instances are written under pacs.incoming; a study with no new
    instance for pacs.quiet_s seconds is published to the study topic, keyed by its Study Instance
    UID, for `inspector medical-worker --claim-root <pacs.incoming>`. A refused instance (not DICOM,
    image too large, pixel data shorter than declared) is answered with a DICOM failure status and
    dead-lettered with its reason. Set with INSPECTOR__PACS__PORT=… and the like, or in YAML.
    """
    from inspector.cli import settings_or_exit

    settings = settings_or_exit(config)
    registry = CollectorRegistry()
    try:
        specs = [TopicSpec(topic, partitions), TopicSpec(dlq)]
        with_admin(lambda: kafka_admin(settings.kafka), settings.kafka.bootstrap, lambda admin: create(admin, specs))
        producer = kafka_producer(settings.kafka, acks="all", retries=5)
        gateway = MedicalGateway(settings, producer, topic=topic, dlq=dlq, metrics=GatewayMetrics(registry))
        port = gateway.start()
    except WorkerError as exc:
        fail(exc)
    except OSError as exc:  # the DICOM port is taken, or the incoming folder cannot be made
        fail(f"cannot start the medical gateway: {exc}; choose another pacs.port or pacs.incoming")
    except Exception as exc:  # the broker unreachable at start: say where
        fail(f"cannot start the medical gateway ({type(exc).__name__}: {exc}); is Kafka at "
             f"{settings.kafka.bootstrap} up?")  # fmt: skip
    server = start_service(gateway, settings, registry, "stopping")
    pacs = settings.pacs
    console.print(
        f"medical gateway: AE {pacs.ae_title} on {pacs.bind_address}:{port} for {', '.join(pacs.allowed_calling_aets)}"
        f" → {topic}; studies complete after {pacs.quiet_s:g} s quiet; metrics on port {server.port}"
    )
    try:
        summary = gateway.run(timeout=duration)
    finally:
        gateway.close()
        server.stop()
    if as_json:
        console.print_json(data=summary)
    else:
        console.print(summary)


def register(app: typer.Typer) -> None:
    """Add ``inspector medical-gateway``."""
    app.command("medical-gateway")(medical_gateway)
