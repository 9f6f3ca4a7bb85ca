"""``edgeagent doctor``: what will work here and why not (CPU features vs the llama.cpp build,
core clusters and threads, SoC and device profile, memory, adb devices and battery, a
torch-free runtime). ``--dump`` checks another device's files, copied with ``tail -n +1``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeagent.output import console, emit_json, fail, table

DUMP_COMMAND = (
    "tail -n +1 /proc/cpuinfo /proc/meminfo /sys/devices/system/cpu/online "
    "/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq /sys/devices/soc0/* > dump.txt"
)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    dump: Optional[Path] = typer.Option(
        None, "--dump", help=f"Check another device from a dump of its files instead of this machine: `{DUMP_COMMAND}`."
    ),
    adb_port: Optional[int] = typer.Option(None, "--adb-port", help="adb server port (default $ANDROID_ADB_SERVER_PORT or 5037)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """What will work on this machine (or a dumped device) and why not."""
    from edgeagent.doctor import DoctorError, Files, diagnose, load_dump, summary_rows
    from edgeagent.profiles import ProfileError

    if adb_port is not None and not 1 <= adb_port <= 65535:
        fail(f"--adb-port must be 1..65535, got {adb_port}")
    try:
        files = load_dump(dump) if dump is not None else Files("/")
        report = diagnose(files, adb_port=adb_port)
    except (DoctorError, ProfileError) as exc:
        fail(str(exc))
    if json_out:
        emit_json(report)
        return
    table(f"edgeagent doctor: {report['source']}", ["area", "finding", "status"], summary_rows(report))
    if dump is not None:
        console.print("llama.cpp build, runtime imports and adb are checks of this machine: not run for a dump.", highlight=False)
