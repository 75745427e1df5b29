"""``inspector cameras``: the GenICam devices this host can see, and the key features of one of them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from inspector.cli import JsonOption
from inspector.commands.common import console, fail
from inspector.sources import SourceError


def cameras(
    device: Annotated[
        str | None, typer.Option("--device", "-d", help="Show the features of this device (id, serial or address).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the GenICam (GigE Vision) cameras on the network: vendor, model, serial, address.

    Run it first when commissioning a rig: each camera of the `cameras:` section is named by one of
    the ids, serials or addresses listed here. With --device, its region, payload, pixel formats,
    trigger sources, exposure and gain. Cameras are found through Aravis (GVCP discovery broadcast
    on every interface); a camera on another subnet than the host's interface is not seen.
    """
    from workers.genicam import describe_device, list_devices

    try:
        found = describe_device(device) if device else list_devices()
    except SourceError as exc:
        fail(exc)
    if as_json:
        console.print_json(data=found)
        return
    if isinstance(found, dict):
        table = Table("feature", "value", title=f"GenICam device {device}")
        for key, value in found.items():
            table.add_row(key, str(value))
    else:
        table = Table("id", "vendor", "model", "serial", "address", "protocol", title="GenICam devices")
        for row in found:
            table.add_row(*(row[k] for k in ("id", "vendor", "model", "serial", "address", "protocol")))
        if not found:
            console.print("no GenICam device answered (is the camera powered, on this host's subnet, not firewalled?)")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``inspector cameras``."""
    app.command("cameras")(cameras)
