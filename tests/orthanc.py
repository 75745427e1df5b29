"""A private Orthanc PACS for tests: deploy/local/stack's optional service on free ports in a folder of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import STACK_SCRIPT, free_port, isolated_env

INSTALL = "deploy/local/install-system-deps (apt-get install -y --no-install-recommends orthanc orthanc-dicomweb dcmtk)"


def orthanc_env(tmp_path: Path) -> dict[str, str]:
    """No INSPECTOR_* from outside; a private state folder; free ports for every service (only probed here)."""
    env = isolated_env(tmp_path)
    env.update(
        INSPECTOR_ORTHANC_DICOM_PORT=str(free_port()),
        INSPECTOR_ORTHANC_HTTP_PORT=str(free_port()),
        INSPECTOR_ORTHANC_AET="TESTPACS",
        INSPECTOR_MEDICAL_GATEWAY_AET="TESTGATEWAY",
        INSPECTOR_MEDICAL_GATEWAY_PORT=str(free_port()),
    )
    return env


def stack(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def rest(env: dict[str, str], path: str) -> Any:
    """GET a path of the private Orthanc's REST API (no proxy: loopback) and return the parsed JSON."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{env['INSPECTOR_ORTHANC_HTTP_PORT']}{path}", timeout=10) as response:
        return json.load(response)


def rest_bytes(env: dict[str, str], path: str) -> bytes:
    """GET a path of the private Orthanc's REST API and return the body (a DICOM file, for instance)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{env['INSPECTOR_ORTHANC_HTTP_PORT']}{path}", timeout=10) as response:
        return bytes(response.read())


def rest_post(env: dict[str, str], path: str, body: object, method: str = "POST") -> Any:
    """POST (or PUT) JSON to the private Orthanc's REST API and return the parsed answer (None when empty)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://127.0.0.1:{env['INSPECTOR_ORTHANC_HTTP_PORT']}{path}", data=json.dumps(body).encode(), method=method
    )
    with opener.open(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None
