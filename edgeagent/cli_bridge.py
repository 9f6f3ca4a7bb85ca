"""``edgeagent emulator``: serve the emulated phone over the adb protocol on loopback, so the
adb path (AdbDevice, Google's ``adb``, any adb client) can be tried without a phone."""

from __future__ import annotations

import typer

from edgeagent.output import console, emit_json, fail


def register(app: typer.Typer) -> None:
    app.command("emulator")(emulator)


def emulator(
    adb_port: int = typer.Option(5037, "--adb-port", help="Loopback port for adb clients (0: pick a free one)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the emulated phone's data (contacts, notes, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print where it listens as a JSON object, then serve."),
) -> None:
    """Serve the emulated phone as an adb device on 127.0.0.1 until Ctrl-C."""
    from android_bridge.emulator.adb_server import AdbServer
    from android_bridge.emulator.phone import EmulatedPhone

    if not 0 <= adb_port <= 65535:
        fail(f"--adb-port must be 0..65535, got {adb_port}")
    server = AdbServer(EmulatedPhone(seed=seed), port=adb_port)
    try:
        server.start()
    except OSError as exc:
        fail(f"{exc} (a real adb server may be running there: `adb kill-server`, or pick another port)")
    port = server.port
    if json_out:
        emit_json({"serial": server.serial, "host": "127.0.0.1", "port": port, "seed": seed})
    else:
        p = "" if port == 5037 else f" -P {port}"
        env = "" if port == 5037 else f"ANDROID_ADB_SERVER_PORT={port} "
        console.print(
            f"Serving the emulated phone (seed {seed}) as [bold]{server.serial}[/] on 127.0.0.1:{port}. Ctrl-C stops it.\n"
            f"  adb{p} devices\n"
            f"  adb{p} shell wm size\n"
            f"  adb{p} exec-out screencap -p > screen.png\n"
            f"  {env}edgeagent run --device adb:{server.serial}",
            highlight=False,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    if not json_out:
        console.print("emulator stopped")
