"""``inspector vqa-worker``: answer questions about images from Kafka ``vqa.requests``, answers to Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client import CollectorRegistry

from inspector.commands.bench import bench_app
from inspector.commands.common import console, fail
from inspector.config import Settings
from inspector.errors import InspectorError
from workers.clients import kafka_admin, kafka_consumer, kafka_producer, redis_client
from workers.commands.service import start_service
from workers.errors import WorkerError
from workers.kafka.topics import TopicSpec, with_admin
from workers.kafka.topics import ensure_topics as create
from workers.vqa import AnswerStore, VQAMetrics, VQATopics, VQAWorker

SHIPPED = Path(__file__).resolve().parents[2] / "inspector" / "models" / "vqa-hffn.pt"


def ensure_topics(settings: Settings, topics: VQATopics, partitions: int) -> None:
    """Create the request, dead-letter and reply topics (and the allowed reply_to ones) when missing.

    An existing topic is left as it is.
    """
    named = (topics.requests, topics.dlq, topics.replies, *topics.allowed_replies)
    specs = [TopicSpec(t, partitions if t == topics.requests else 1) for t in dict.fromkeys(named) if t]
    with_admin(lambda: kafka_admin(settings.kafka), settings.kafka.bootstrap, lambda admin: create(admin, specs))


def build_worker(
    settings: Settings, registry: CollectorRegistry, model_path: Path, topics: VQATopics, *,
    group: str, prefix: str, ttl_s: int, batch: int, write_attempts: int = 7,
) -> VQAWorker:  # fmt: skip
    """The model, Redis store, Kafka clients and metrics, from settings and options."""
    from inspector.vqa.model import VQAModel

    if not model_path.is_file():
        raise WorkerError(f"VQA model {model_path} not found: train one with `inspector vqa train --out {model_path}`")
    model = VQAModel.load(model_path)
    client = redis_client(settings.redis)

    def make_consumer() -> Any:
        return kafka_consumer(
            settings.kafka, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=batch, session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
        )  # fmt: skip

    producer = kafka_producer(settings.kafka, acks="all", linger_ms=5, retries=5)
    store = AnswerStore(client, prefix=prefix, ttl_s=ttl_s)
    return VQAWorker(
        model, store, None, producer, topics, make_consumer=make_consumer, metrics=VQAMetrics(registry),
        batch=batch, write_attempts=write_attempts,
    )  # fmt: skip


def vqa_worker(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings (kafka, redis, metrics sections).")
    ] = None,
    model: Annotated[Path, typer.Option(help="A model from `inspector vqa train`.")] = SHIPPED,
    topic: Annotated[str, typer.Option(help="Request topic.", envvar="INSPECTOR_VQA_TOPIC")] = "vqa.requests",
    dlq: Annotated[str, typer.Option(help="Dead-letter topic.", envvar="INSPECTOR_VQA_DLQ")] = "vqa.dlq",
    reply_topic: Annotated[
        str | None, typer.Option(help="Also publish every answer here.", envvar="INSPECTOR_VQA_REPLY_TOPIC")
    ] = None,
    allow_reply_to: Annotated[
        list[str] | None,
        typer.Option(
            help="A topic a request's reply_to header may name (repeatable; the variable: space-separated). "
            "Unset: only --reply-topic; a request naming another is dead-lettered (reply_to_not_allowed).",
            envvar="INSPECTOR_VQA_ALLOW_REPLY_TO",
        ),
    ] = None,
    group: Annotated[str, typer.Option(help="Consumer group.", envvar="INSPECTOR_VQA_GROUP")] = "vqa-workers",
    prefix: Annotated[str, typer.Option(help="Redis key prefix of answers.")] = "vqa:answer",
    ttl: Annotated[int, typer.Option(min=1, help="Seconds an answer is kept in Redis.")] = 24 * 3600,
    batch: Annotated[int, typer.Option(min=1, help="Most requests per poll and model call.")] = 16,
    write_attempts: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="INSPECTOR_VQA_WRITE_ATTEMPTS",
            help="Tries to store and send a batch's answers (back-off 1 s doubling) before the unwritten ones "
            "go to the dead-letter topic (write_failed).",
        ),
    ] = 7,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of a request topic created here.")] = 4,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many requests.")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Consume vqa.requests (image bytes + question + request_id headers), answer in batches, store to Redis.

    Answers go to Redis {prefix}:{request_id} as JSON with a TTL (and to --reply-topic, and to a request's
    reply_to header when --allow-reply-to lists it). Bad requests go to the dead-letter topic with a
    dlq_reason header, and so do answers still unwritten after --write-attempts (write_failed). Offsets
    are committed after the answers are written or dead-lettered; /metrics, /healthz and /readyz are
    served on metrics.bind_address:metrics.port. See docs/VQA.md.
    """
    from inspector.cli import settings_or_exit

    settings = settings_or_exit(config)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    registry = CollectorRegistry()
    try:
        topics = VQATopics(requests=topic, dlq=dlq, replies=reply_topic, allowed_replies=tuple(allow_reply_to or ()))
        ensure_topics(settings, topics, partitions)
        worker = build_worker(
            settings, registry, model, topics, group=group, prefix=prefix, ttl_s=ttl, batch=batch,
            write_attempts=write_attempts,
        )  # fmt: skip
    except (InspectorError, WorkerError) as exc:
        fail(exc)
    except Exception as exc:  # the broker or Redis unreachable at start: say where
        fail(f"cannot start the VQA worker ({type(exc).__name__}: {exc}); is Kafka at {settings.kafka.bootstrap} up?")

    server = start_service(worker, settings, registry, "finishing the batch and stopping")
    info = f"{worker.info['fusion']} model {worker.info['sha256']}"
    console.print(f"VQA worker in group {group} on {topic}: {info}, metrics on port {server.port}")
    try:
        report = worker.run(timeout=duration, count=count)
    finally:
        server.stop()
    if as_json:
        console.print_json(data=report.to_dict())
    else:
        console.print(report.to_dict())


@bench_app.command("vqa-worker")
def bench_vqa_worker(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings (kafka, redis).")] = None,
    model: Annotated[Path, typer.Option(help="A model from `inspector vqa train`.")] = SHIPPED,
    requests: Annotated[int, typer.Option(min=1, help="Requests published before the worker starts.")] = 500,
    batch: Annotated[int, typer.Option(min=1, help="Most requests per poll and model call.")] = 16,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON document.")] = False,
) -> None:
    """Worker throughput on the real stack: publish a backlog of held-out requests, time one worker draining it."""
    import statistics
    import time
    import uuid

    from inspector.cli import settings_or_exit
    from inspector.commands.bench import emit, machine
    from inspector.vqa.data import build_set, encode_png

    settings = settings_or_exit(config)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    tag = uuid.uuid4().hex[:8]
    topics = VQATopics(requests=f"bench-vqa-{tag}", dlq=f"bench-vqa-dlq-{tag}")
    data = build_set(max(1, requests // 10 + 1), seed=31_337)
    try:
        ensure_topics(settings, topics, partitions=1)
        producer = kafka_producer(settings.kafka, acks="all", linger_ms=5)
        for i in range(requests):
            row = i % len(data)
            headers = [("request_id", f"b{i}".encode()), ("question", data.questions[row].encode())]
            png = encode_png(data.images[data.scene_index[row]])
            producer.send(topics.requests, value=png, key=f"b{i}".encode(), headers=headers)
        producer.flush()
        producer.close()
        registry = CollectorRegistry()
        worker = build_worker(
            settings, registry, model, topics, group=f"bench-{tag}", prefix=f"bench-{tag}:vqa:answer", ttl_s=600,
            batch=batch,
        )  # fmt: skip
    except (InspectorError, WorkerError) as exc:
        fail(exc)
    per_step: list[float] = []
    handled = 0
    started = time.perf_counter()
    while handled < requests and time.perf_counter() - started < 600:
        t0 = time.perf_counter()
        n = worker.step()
        if n:
            per_step.append((time.perf_counter() - t0) / n)
        handled += n
    seconds = time.perf_counter() - started
    worker.close()
    latency_sum = registry.get_sample_value("inspector_vqa_latency_seconds_sum") or 0.0
    document = {
        "requests": requests, "answered": worker.report.answered, "errors": dict(worker.report.errors),
        "batch": batch, "threads": threads, "seconds": round(seconds, 2),
        "requests_per_s": round(worker.report.answered / seconds, 1) if seconds else 0.0,
        "ms_per_request_median": round(1000 * statistics.median(per_step), 2) if per_step else None,
        "mean_backlog_latency_s": round(latency_sum / max(worker.report.answered, 1), 2),
        "model": worker.info, "machine": machine(),
    }  # fmt: skip
    emit(document, None, as_json)


def register(app: typer.Typer) -> None:
    """Add ``inspector vqa-worker``."""
    app.command("vqa-worker")(vqa_worker)
