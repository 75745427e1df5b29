"""deploy/local/stack's optional Orthanc PACS: settings, generated config, and a private Orthanc on free ports.

The integration test starts only Orthanc (never the default services), in its own state folder and on
free loopback ports, stores pydicom's ``CT_small.dcm`` with dcmtk's ``storescu`` and checks that the
study survives a stop and a start. It fails, never skips, when Orthanc or dcmtk is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from types import ModuleType

import pydicom.data
import pytest

from tests.orthanc import INSTALL, orthanc_env, rest, stack

pytestmark = [pytest.mark.integration]

# --------------------------------------------------------------------------- without a service


@pytest.mark.parametrize("value", ["abc", "0", "70000", ""])
def test_bad_orthanc_http_port_is_refused(stack_module: ModuleType, value: str) -> None:
    with pytest.raises(stack_module.StackError, match=f"INSPECTOR_ORTHANC_HTTP_PORT='{value}' is not a TCP port"):
        stack_module.Settings.from_env({"INSPECTOR_ORTHANC_HTTP_PORT": value})


@pytest.mark.parametrize("value", ["", "MUCH_TOO_LONG_AE_TITLE", "A\\B", " PACS"])
def test_bad_orthanc_aet_is_refused(stack_module: ModuleType, value: str) -> None:
    with pytest.raises(stack_module.StackError, match=r"INSPECTOR_ORTHANC_AET=.* is not a DICOM AE title"):
        stack_module.Settings.from_env({"INSPECTOR_ORTHANC_AET": value})


def test_orthanc_settings_defaults_and_environment(stack_module: ModuleType, tmp_path: Path) -> None:
    defaults = stack_module.Settings.from_env({"HOME": str(tmp_path)})
    assert (defaults.orthanc_dicom_port, defaults.orthanc_http_port, defaults.orthanc_aet) == (4242, 8042, "ORTHANC")
    assert (defaults.gateway_aet, defaults.gateway_port) == ("INSPECTOR", 11112)
    env = orthanc_env(tmp_path)
    s = stack_module.Settings.from_env(env)
    assert s.address("orthanc") == f"http://127.0.0.1:{env['INSPECTOR_ORTHANC_HTTP_PORT']}"
    assert s.port("orthanc") == int(env["INSPECTOR_ORTHANC_HTTP_PORT"])
    assert s.orthanc_dicom_port == int(env["INSPECTOR_ORTHANC_DICOM_PORT"])


def test_generated_orthanc_config(stack_module: ModuleType, tmp_path: Path) -> None:
    env = orthanc_env(tmp_path)
    s = stack_module.Settings.from_env(env)
    config = json.loads(stack_module.orthanc_config(s).read_text())
    db = str(tmp_path / "state" / "orthanc" / "db")
    assert config["StorageDirectory"] == config["IndexDirectory"] == db
    assert config["HttpPort"] == int(env["INSPECTOR_ORTHANC_HTTP_PORT"])
    assert config["DicomPort"] == int(env["INSPECTOR_ORTHANC_DICOM_PORT"])
    assert config["DicomAet"] == "TESTPACS"
    assert config["RemoteAccessAllowed"] is False and config["AuthenticationEnabled"] is False
    assert config["DicomAlwaysAllowStore"] is True and config["DicomCheckCalledAet"] is False
    assert config["StableAge"] == 5
    assert config["DicomModalities"] == {
        "inspector": ["TESTGATEWAY", "127.0.0.1", int(env["INSPECTOR_MEDICAL_GATEWAY_PORT"])]
    }
    if stack_module.DICOMWEB_PLUGIN.exists():
        assert config["Plugins"] == [str(stack_module.DICOMWEB_PLUGIN)]
        assert config["DicomWeb"] == {"Enable": True, "Root": "/dicom-web/"}
    else:
        assert "Plugins" not in config and "DicomWeb" not in config


def test_optional_orthanc_does_not_decide_the_status_exit_code(stack_module: ModuleType) -> None:
    running = {"state": "running", "pid": 1, "address": "", "answers": True}
    off = {"state": "off", "pid": None, "address": "", "answers": False}
    report = {name: running for name in stack_module.SERVICES} | {"orthanc": off}
    assert stack_module.status_code(report) == 0
    assert stack_module.status_code(report | {"redis": {**off, "state": "stopped"}}) == 3


def test_up_without_names_leaves_orthanc_out(stack_module: ModuleType) -> None:
    assert "orthanc" not in stack_module.SERVICES
    assert "orthanc" in stack_module.ALL_SERVICES
    assert "orthanc" not in stack_module.PROBES  # tests/conftest.py's `stack` fixture waits for PROBES only


def test_unknown_service_lists_orthanc(tmp_path: Path) -> None:
    result = stack(orthanc_env(tmp_path), "start", "pacs")
    assert result.returncode == 1
    assert "unknown service pacs: choose from kafka, redis, prometheus, orthanc" in result.stderr


@pytest.mark.parametrize("taken", ["INSPECTOR_ORTHANC_HTTP_PORT", "INSPECTOR_ORTHANC_DICOM_PORT"])
def test_a_taken_orthanc_port_names_its_variable(tmp_path: Path, taken: str) -> None:
    if shutil.which("Orthanc") is None:
        pytest.fail(f"Orthanc is not installed: run {INSTALL}", pytrace=False)
    env = orthanc_env(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        env[taken] = str(listener.getsockname()[1])
        result = stack(env, "start", "orthanc")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"choose another port with {taken}=..." in result.stderr
    assert not (tmp_path / "state" / "pids" / "orthanc.pid").exists()


# --------------------------------------------------------------------------- a private Orthanc


def test_a_private_orthanc_stores_a_study_and_keeps_it_across_a_restart(
    stack_module: ModuleType, tmp_path: Path
) -> None:
    for tool in ("Orthanc", "storescu"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run {INSTALL}", pytrace=False)
    env = orthanc_env(tmp_path)
    ct = pydicom.data.get_testdata_file("CT_small.dcm")
    assert ct is not None, "pydicom's test file CT_small.dcm is missing"
    try:
        started = stack(env, "start", "orthanc")
        assert started.returncode == 0, started.stdout + started.stderr
        status = stack(env, "status", "--json")
        assert status.returncode == 3, status.stderr  # the default services do not run here; orthanc does not count
        report = json.loads(status.stdout)
        assert report["orthanc"]["state"] == "running", report
        assert report["orthanc"]["address"] == f"http://127.0.0.1:{env['INSPECTOR_ORTHANC_HTTP_PORT']}"
        assert rest(env, "/system")["DicomAet"] == "TESTPACS"
        modality = rest(env, "/modalities?expand")["inspector"]
        assert (modality["AET"], modality["Host"], modality["Port"]) == (
            "TESTGATEWAY",
            "127.0.0.1",
            int(env["INSPECTOR_MEDICAL_GATEWAY_PORT"]),
        )

        store = subprocess.run(
            ["storescu", "-aec", "TESTPACS", "127.0.0.1", env["INSPECTOR_ORTHANC_DICOM_PORT"], str(ct)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert store.returncode == 0, store.stdout + store.stderr
        studies = rest(env, "/studies")
        assert len(studies) == 1, studies
        assert len(rest(env, "/instances")) == 1
        if stack_module.DICOMWEB_PLUGIN.exists():
            assert len(rest(env, "/dicom-web/studies")) == 1

        stopped = stack(env, "stop", "orthanc")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert json.loads(stack(env, "status", "--json").stdout)["orthanc"]["state"] == "off"
        again = stack(env, "start", "orthanc")
        assert again.returncode == 0, again.stdout + again.stderr
        assert rest(env, "/studies") == studies
        assert len(rest(env, "/instances")) == 1
    finally:
        final = stack(env, "stop", "orthanc")
    assert final.returncode == 0, final.stdout + final.stderr
    assert not (tmp_path / "state" / "pids" / "orthanc.pid").exists()
