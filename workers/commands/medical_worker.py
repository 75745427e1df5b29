"""``inspector medical-worker``: consume ``medical.studies``, draft reports, store them in Redis, serve metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry

from inspector.commands.bench import bench_app
from inspector.commands.common import console, fail
from inspector.commands.medical import DEFAULT_MODEL
from inspector.config import Settings
from inspector.errors import InspectorError
from workers.clients import kafka_admin, redis_client
from workers.commands.service import start_service
from workers.errors import WorkerError
from workers.kafka.topics import TopicSpec, with_admin
from workers.kafka.topics import ensure_topics as create
from workers.medical import MedicalConfig, MedicalMetrics, MedicalWorker
from workers.pacs import PacsSender
from workers.stores import ClaimedStore


def ensure_topics(settings: Settings, medical: MedicalConfig, partitions: int) -> None:
    """Create the study topic (``partitions``) and the dead-letter topic when missing; existing ones stay."""
    specs = [TopicSpec(medical.topic, partitions), TopicSpec(medical.dlq)]
    with_admin(lambda: kafka_admin(settings.kafka), settings.kafka.bootstrap, lambda admin: create(admin, specs))


def medical_worker(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings (Kafka, Redis, metrics addresses).")
    ] = None,
    model: Annotated[Path, typer.Option("--model", "-m", help="Report model file.")] = DEFAULT_MODEL,
    topic: Annotated[str, typer.Option(help="Topic of study requests.")] = "medical.studies",
    dlq: Annotated[str, typer.Option(help="Dead-letter topic.")] = "medical.dlq",
    group_id: Annotated[str, typer.Option(help="Consumer group.")] = "inspector-medical",
    prefix: Annotated[
        str,
        typer.Option(help="Redis key prefix: reports at {prefix}:report:{uid}, new ones listed in {prefix}:stream."),
    ] = "medical",
    ttl_s: Annotated[int, typer.Option(min=1, help="Seconds a report stays in Redis.")] = 30 * 24 * 3600,
    max_inline_mb: Annotated[float, typer.Option(min=0.001, help="Largest inline payload (MB).")] = 16.0,
    claim_root: Annotated[
        list[Path] | None, typer.Option(help="Folder claim-check paths may point into (repeatable).")
    ] = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of a study topic created here.")] = 4,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many records.")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Draft a report for every study request; reports go to Redis {prefix}:report:{StudyInstanceUID} (JSON, TTL).

    Bad records (not DICOM, no pixels, unsupported compression, bad geometry, too large inline) go to
    the dead-letter topic with a reason; /metrics, /healthz and /readyz are served on
    metrics.bind_address:metrics.port.
    """
    from inspector.cli import settings_or_exit
    from inspector.medical.report import load_profile, load_report_model

    settings = settings_or_exit(config)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    registry = CollectorRegistry()
    medical = MedicalConfig(
        topic=topic, dlq=dlq, group_id=group_id, key_prefix=prefix, ttl_s=ttl_s,
        max_inline_bytes=int(max_inline_mb * 2**20), claim_roots=tuple(claim_root or ()),
    )  # fmt: skip
    try:
        net, tokenizer, info = load_report_model(model)
        info.pop("metadata", None)
        profile = load_profile(model)
        ensure_topics(settings, medical, partitions)
        store = ClaimedStore(redis_client(settings.redis), medical.key_prefix, medical.ttl_s)
        sender = PacsSender.from_settings(settings.pacs)
        worker = MedicalWorker(
            settings, medical, net, tokenizer, store, metrics=MedicalMetrics(registry), info=info, profile=profile,
            sender=sender,
        )  # fmt: skip
    except (InspectorError, WorkerError) as exc:
        fail(exc)
    except Exception as exc:  # the broker unreachable at start: say where
        fail(
            f"cannot start the medical worker ({type(exc).__name__}: {exc}); is Kafka at {settings.kafka.bootstrap} up?"
        )

    server = start_service(worker, settings, registry, "stopping")
    reports = f"; reports as DICOM SR to {sender.target}" if sender is not None else ""
    console.print(f"medical worker on {topic} (group {group_id}), metrics on port {server.port}{reports}")
    try:
        report = worker.run(timeout=duration, count=count)
    finally:
        server.stop()
    summary = {
        "records": report.records, "stored": report.stored, "already_stored": report.already_stored,
        "dlq": dict(report.dlq),
        "store_errors": report.store_errors, "out_of_domain": report.out_of_domain,
        "seconds": round(report.seconds, 3),
    }  # fmt: skip
    if as_json:
        console.print_json(data=summary)
    else:
        console.print(summary)


@bench_app.command("medical-worker")
def bench_medical_worker(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings (kafka, redis).")] = None,
    model: Annotated[Path, typer.Option("--model", "-m", help="Report model file.")] = DEFAULT_MODEL,
    studies: Annotated[
        int, typer.Option(min=1, help="Phantom studies published (as claim checks) before the start.")
    ] = 40,
    seed: Annotated[int, typer.Option(help="First phantom seed (other seeds than training's).")] = 720_000,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON document.")] = False,
) -> None:
    """Worker throughput on the real stack: publish a backlog of phantom studies, time one worker drafting them all.

    Each study (synthetic CT, written as DICOM to a temporary folder) is sent as a claim check to a
    fresh one-partition topic; one :class:`~workers.medical.MedicalWorker` then reads, drafts and
    stores every report. Studies/s counts the group join too.
    """
    import tempfile
    import time
    import uuid

    from inspector.cli import settings_or_exit
    from inspector.commands.bench import emit, machine
    from inspector.medical.phantom import make_study, write_dicom
    from inspector.medical.report import load_report_model
    from workers.clients import kafka_producer
    from workers.medical import study_headers

    settings = settings_or_exit(config)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-medical-") as folder:
        root = Path(folder)
        medical = MedicalConfig(
            topic=f"bench-medical-{tag}", dlq=f"bench-medical-dlq-{tag}", group_id=f"bench-{tag}", ttl_s=600,
            key_prefix=f"bench-{tag}:medical", claim_roots=(root,),
        )  # fmt: skip
        try:
            uids = []
            for index in range(studies):
                study = make_study(seed + index)
                write_dicom(study, root / f"study-{index}")
                uids.append(study.study_uid)
            ensure_topics(settings, medical, partitions=1)
            producer = kafka_producer(settings.kafka, acks="all")
            for index, uid in enumerate(uids):
                value = str(root / f"study-{index}").encode()
                producer.send(medical.topic, value=value, key=uid.encode(), headers=study_headers(uid, "claim"))
            producer.flush()
            producer.close()
            net, tokenizer, info = load_report_model(model)
            info.pop("metadata", None)
            worker = MedicalWorker(
                settings, medical, net, tokenizer, ClaimedStore(redis_client(settings.redis), medical.key_prefix, 600),
                metrics=MedicalMetrics(CollectorRegistry()), info=info,
            )  # fmt: skip
        except (InspectorError, WorkerError) as exc:
            fail(exc)
        started = time.perf_counter()
        report = worker.run(timeout=600, count=studies)
        seconds = time.perf_counter() - started
    document = {
        "studies": studies, "stored": report.stored, "dlq": dict(report.dlq), "threads": threads,
        "seconds": round(seconds, 2), "studies_per_s": round(report.stored / seconds, 2) if seconds else 0.0,
        "model": {k: info.get(k) for k in ("name", "version")}, "synthetic_data": True, "machine": machine(),
    }  # fmt: skip
    emit(document, None, as_json)


def register(app: typer.Typer) -> None:
    """Add ``inspector medical-worker``."""
    app.command("medical-worker")(medical_worker)
