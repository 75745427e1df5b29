"""The review station in a real browser, on the real local stack (issue 23 §2).

The synthetic gateway, one inspection worker and ``inspector review`` run as processes against the
stack's Kafka and Redis; headless Debian chromium (Selenium, /usr/bin/chromedriver) signs in as a
reviewer. Checked: an NG part appears in the queue within seconds of its result being stored; the
layer keys work; marking it a false call writes a label sample that ``inspector train`` reads.

Screenshots for the docs (1280×800), not on ordinary runs::

    INSPECTOR_REVIEW_SCREENSHOTS=docs/img pytest tests/integration/test_review_browser.py

writes ``review-queue.png`` and ``review-part.png`` there.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from kafka import KafkaAdminClient
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from inspector.config import Settings
from inspector.crack_data import CrackTileSet
from inspector.dataset import read_sample
from inspector.labels import label_id
from tests.conftest import REPO, Stack, free_port
from tests.integration.frames import create_topics, fresh_settings
from tests.workers.review_support import PASSWORDS, add_users, review_settings, seed_part
from workers.evidence import EvidenceStore
from workers.pipeline_bench import worker_env
from workers.review.decisions import read_audit

pytestmark = pytest.mark.integration

SHOTS_ENV = "INSPECTOR_REVIEW_SCREENSHOTS"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
QUEUE_DELAY_S = 6.0  # the page polls every 2 s: an NG part must show within this of being stored
SHOT_MAX_BYTES = 300_000
IMAGE_SHOWN = "const i = document.getElementById('layer-visible'); return i && i.complete && i.naturalWidth > 0;"


class Process:
    """A process this test started, with its log; stopped by SIGTERM, killed if it lingers."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], folder: Path) -> None:
        self.name, self.log = name, folder / f"{name}.log"
        with self.log.open("w") as out:
            command = [sys.executable, "-m", "workers.cli", *args]
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def wait_for(condition: Callable[[], object], timeout: float, what: str, logs: Callable[[], str] = str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs()}")


def stack_env(settings: Settings, tmp: Path, port: int) -> dict[str, str]:
    """Every process's environment: this test's topics, Redis prefix, evidence and review files."""
    env = worker_env(settings)  # Kafka, Redis, topics, group, model, one thread per library
    env.update(
        {
            "INSPECTOR__TOPICS__PARTITIONS": str(settings.topics.partitions),
            "INSPECTOR__WORKER__MODEL": "crack-concat",  # the shipped model: a file SHA and modal weights to show
            "INSPECTOR__INFERENCE__THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "INSPECTOR__EVIDENCE__ROOT": str(tmp / "evidence"),
            "INSPECTOR__REVIEW__BIND_ADDRESS": "127.0.0.1",
            "INSPECTOR__REVIEW__PORT": str(port),
            "INSPECTOR__REVIEW__USERS_FILE": str(settings.review.users_file),
            "INSPECTOR__REVIEW__LABELS": str(settings.review.labels),
            "INSPECTOR__REVIEW__AUDIT_LOG": str(settings.review.audit_log),
            "INSPECTOR__REVIEW__SESSION_SECRET": uuid.uuid4().hex,
        }
    )
    return env


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    yield driver
    driver.quit()


def screenshot(driver: WebDriver, name: str) -> None:
    """Save a 1280×800 PNG under $INSPECTOR_REVIEW_SCREENSHOTS (quantised when over 300 KB)."""
    folder = os.environ.get(SHOTS_ENV)
    if not folder:
        return
    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    assert image.size == (1280, 800), image.size
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    if path.stat().st_size > SHOT_MAX_BYTES:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    assert path.stat().st_size < SHOT_MAX_BYTES, f"{path} is {path.stat().st_size} bytes"


def sign_in(browser: WebDriver, base: str, name: str) -> None:
    """Open the station (redirected to the sign-in page) and sign in; lands on the queue."""
    browser.get(f"{base}/")
    assert "/signin" in browser.current_url
    browser.find_element(By.ID, "username").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    browser.find_element(By.ID, "signin-button").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "queue-body"))


def start_station(env: dict[str, str], folder: Path, base: str, procs: list[Process]) -> None:
    """``inspector review`` as a process; returns once its /healthz answers."""
    procs.append(Process("review", ["review"], env, folder))

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_for(healthy, 60, "the review station's /healthz", lambda: "\n".join(p.tail() for p in procs))


def saved_page(browser: WebDriver, flash: str) -> None:
    """Wait for the page a decision redirects to, showing ``flash`` (the old page's elements go stale meanwhile)."""
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: flash in d.find_element(By.TAG_NAME, "body").text
    )


def first_ng(client: redis.Redis, prefix: str) -> tuple[str, int] | None:
    for _id, fields in client.xrange(f"{prefix}:results"):
        if fields[b"verdict"] == b"NG":
            document = json.loads(client.get(fields[b"key"]) or b"{}")
            if document.get("evidence"):
                return document["camera_id"], int(document["seq"])
    return None


def test_a_reviewer_marks_a_live_ng_part_as_a_false_call_in_a_browser(
    stack: Stack, tmp_path: Path, browser: WebDriver
) -> None:
    settings = fresh_settings(stack.kafka_bootstrap, stack.redis_url, partitions=1)
    settings = settings.model_copy(update={"review": settings.review.model_copy(update={
        "users_file": tmp_path / "users.yaml", "labels": tmp_path / "labels", "audit_log": tmp_path / "audit.jsonl",
    })})  # fmt: skip
    add_users(settings)
    create_topics(settings)
    port = free_port()
    env = stack_env(settings, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(settings.redis.url)
    procs: list[Process] = []

    def logs() -> str:
        return "\n".join(p.tail() for p in procs)

    try:
        start_station(env, tmp_path, base, procs)
        procs.append(Process("worker", ["worker"], env, tmp_path))
        sign_in(browser, base, "rita")  # the queue is empty before any part is made
        assert not browser.find_elements(By.CSS_SELECTOR, "#queue-body tr.open")

        procs.append(Process("gateway", ["gateway", "--source", "synthetic", "--cameras", "rig-1", "--fps", "2",
                                         "--size", "256", "--duration", "120"], env, tmp_path))  # fmt: skip
        camera_id, seq = wait_for(lambda: first_ng(client, settings.redis.key_prefix), 120,
                                  "an NG result with evidence in Redis", logs)  # type: ignore[misc]  # fmt: skip
        stored_at = time.monotonic()
        row = f'#queue-body tr.open[data-url="/part/{camera_id}/{seq}"]'
        WebDriverWait(browser, QUEUE_DELAY_S + 5).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        shown_after = time.monotonic() - stored_at
        assert shown_after < QUEUE_DELAY_S, f"the NG part took {shown_after:.1f} s to reach the queue"
        assert "NG" in browser.find_element(By.CSS_SELECTOR, row).text
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#queue-body tr.open")) >= 3, 60, "3 NG parts")
        procs[-1].stop()  # the gateway: a still queue for the screenshot
        time.sleep(2.5)
        screenshot(browser, "review-queue.png")

        # The part view: layers on the keys, then a false call.
        link = f'{row} a[href="/part/{camera_id}/{seq}"]'
        WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: d.find_element(By.CSS_SELECTOR, link).click() or True  # the queue may redraw meanwhile
        )
        WebDriverWait(browser, 10).until(lambda d: d.execute_script(IMAGE_SHOWN))
        assert browser.find_elements(By.CSS_SELECTOR, "#cracks tbody tr")
        assert "mm" in browser.find_element(By.ID, "cracks").text
        document = json.loads(client.get(f"{settings.redis.key_prefix}:result:{camera_id}:{seq}") or b"{}")
        assert len(document["model"]["sha256"]) == 64
        assert browser.find_element(By.ID, "model-sha").text == document["model"]["sha256"]
        assert "visible 0." in browser.find_element(By.ID, "modal-weights").text
        screenshot(browser, "review-part.png")

        def off(layer: str) -> bool:
            return "off" in (browser.find_element(By.ID, layer).get_attribute("class") or "")

        body = browser.find_element(By.TAG_NAME, "body")
        assert off("layer-map") and off("layer-ir") and not off("layer-outlines")
        for key, layer in (("c", "layer-map"), ("i", "layer-ir"), ("o", "layer-outlines"), ("v", "layer-visible")):
            before = off(layer)
            body.send_keys(key)
            assert off(layer) != before, f"key {key} did not toggle {layer}"

        browser.find_element(By.ID, "false-call-button").click()
        saved_page(browser, "Saved: false call (OK)")
        assert "false call → OK" in browser.find_element(By.ID, "decided").text
    finally:
        for proc in reversed(procs):
            proc.stop()
        keys = list(client.scan_iter(f"{settings.redis.key_prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka.servers)
        try:
            admin.delete_topics([settings.topics.visible, settings.topics.infrared, settings.topics.dlq])
        except Exception as exc:  # cleaning up; the topics are unique to this test
            print(f"topics left behind: {exc}")
        finally:
            admin.close()

    # The label: in inspector.sample/1, empty mask (a false call), readable by training.
    sample_id = label_id(camera_id, seq)
    sample = read_sample(settings.review.labels, sample_id)
    assert sample.mask is not None and not sample.mask.any()
    assert sample.meta.preset == "review" and (sample.meta.camera_id, sample.meta.seq) == (camera_id, seq)
    assert sample.visible.shape == (256, 256) and sample.infrared.dtype.name == "uint16"
    assert len(CrackTileSet.load(settings.review.labels)) == 1
    (line,) = read_audit(settings.review.audit_log)
    assert line["who"] == "rita" and line["before"]["verdict"] == "NG" and line["after"]["kind"] == "false_call"


def test_a_reviewer_relabels_cracks_and_brushes_a_missed_one(stack: Stack, tmp_path: Path, browser: WebDriver) -> None:
    """On a part seeded through the evidence store (as the worker writes it): radios, brush, relabel."""
    settings = review_settings(tmp_path, stack.redis_url, prefix=f"test-review-{uuid.uuid4().hex[:8]}")
    add_users(settings)
    client = redis.Redis.from_url(settings.redis.url)
    part = seed_part(client, settings, EvidenceStore.from_settings(settings.evidence), "rig-7", 6)
    assert part.evidence is not None and part.evidence["cracks"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = stack_env(settings, tmp_path, port) | {"INSPECTOR__EVIDENCE__ROOT": str(settings.evidence.root)}
    procs: list[Process] = []
    try:
        start_station(env, tmp_path, base, procs)
        sign_in(browser, base, "rita")
        browser.get(f"{base}/part/rig-7/6")
        WebDriverWait(browser, 10).until(lambda d: d.execute_script(IMAGE_SHOWN))
        for index in range(len(part.evidence["cracks"])):  # none of the model's cracks is real
            browser.find_element(By.CSS_SELECTOR, f'input[name="crack.{index}"][value="not_crack"]').click()
        browser.find_element(By.TAG_NAME, "body").send_keys("b")
        width_field = browser.find_element(By.ID, "brush-width")
        width_field.clear()
        width_field.send_keys("4")
        browser.execute_script("window.scrollTo(0, 0)")  # the whole canvas in view: offsets are from its centre
        canvas = browser.find_element(By.ID, "brush")
        box = canvas.rect  # CSS pixels; the canvas maps them onto the visible image's pixels
        scale = box["width"] / part.evidence["visible_shape"][1]
        # a horizontal stroke from (10, 90) to (40, 90) in image pixels, drawn in CSS pixels from the canvas centre
        start_x, y = 10.5 * scale - box["width"] / 2, 90.5 * scale - box["height"] / 2
        steps = ActionChains(browser).move_to_element_with_offset(canvas, int(start_x), int(y)).click_and_hold()
        for k in range(1, 11):
            steps = steps.move_to_element_with_offset(canvas, int(start_x + 3 * k * scale), int(y))
        steps.release().perform()
        assert browser.find_element(By.ID, "stroke-count").text == "1 stroke"
        strokes = json.loads(browser.find_element(By.ID, "strokes").get_attribute("value") or "[]")
        assert len(strokes) == 1 and strokes[0]["width_px"] == 4
        browser.find_element(By.ID, "relabel-button").click()
        saved_page(browser, "Saved: relabel (NG)")
    finally:
        for proc in procs:
            proc.stop()
        keys = list(client.scan_iter(f"{settings.redis.key_prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()

    sample = read_sample(settings.review.labels, "rig-7-6")
    assert sample.mask is not None
    rows, cols = np.nonzero(sample.mask)
    assert abs(rows.mean() - 90) <= 2 and 8 <= cols.min() <= 13 and 37 <= cols.max() <= 43  # the stroke only
    assert rows.max() - rows.min() <= 6  # 4 px wide (plus the pointer's sub-pixel offsets)
    (line,) = read_audit(settings.review.audit_log)
    assert line["after"]["kind"] == "relabel" and set(line["after"]["cracks"].values()) == {"not_crack"}
