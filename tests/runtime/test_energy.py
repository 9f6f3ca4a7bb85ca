"""Battery energy measurement: integration of scripted battery traces with analytically
known answers (within 1 %), irregular and noisy sampling, baseline subtraction, vendor
unit/sign quirks, the charging warning, and the sampling thread against a scripted battery."""

from __future__ import annotations

import random
import threading
import time

import pytest

from android_bridge.device import Battery
from edgeagent.energy import (
    CHARGING_WARNING,
    BatterySampler,
    energy_from_traces,
    integrate_mah,
    mah_from_joules,
    measure_energy,
    trace_from_readings,
    trapezoid,
)

V = 3.85  # volts, constant in the scripted traces so J and mAh have closed forms

# Piecewise-linear discharge current (mA) over 12 s: idle, ramp up, plateau, drop, tail.
KNOTS = [(0.0, 200.0), (2.0, 200.0), (6.0, 1200.0), (8.0, 1200.0), (9.0, 300.0), (12.0, 300.0)]
# Exact integral by hand: 2*200 + 4*700 + 2*1200 + 1*750 + 3*300 = 7250 mA*s
KNOTS_MA_S = 7250.0


def piecewise(t: float, knots: list[tuple[float, float]] = KNOTS) -> float:
    for (t0, y0), (t1, y1) in zip(knots, knots[1:]):
        if t0 <= t <= t1:
            return y0 + (y1 - y0) * (t - t0) / (t1 - t0)
    return knots[-1][1] if t > knots[-1][0] else knots[0][1]


def irregular_times(end: float, lo: float, hi: float, seed: int) -> list[float]:
    """Sample times with random gaps in [lo, hi] s (adb round trips jitter), ending at ``end``."""
    rng = random.Random(seed)
    ts = [0.0]
    while ts[-1] + hi < end:
        ts.append(ts[-1] + rng.uniform(lo, hi))
    ts.append(end)
    return ts


def readings(times: list[float], current, volts: float | None = V, charging: bool | None = False, scale: float = 1.0):
    return [(t, Battery(voltage_v=volts, current_ma=current(t) * scale, charging=charging)) for t in times]


def test_trapezoid_is_exact_for_linear_pieces() -> None:
    assert trapezoid([0.0, 1.0, 3.0], [0.0, 2.0, 2.0]) == pytest.approx(5.0)
    assert trapezoid([0.0], [1.0]) == 0.0


def test_mah_formula_exact() -> None:
    assert mah_from_joules(3.6 * 3.85, 3.85) == pytest.approx(1.0, rel=1e-12)
    assert mah_from_joules(100.0, 3.88) == pytest.approx(100.0 / 13.968)


def test_constant_current_exact() -> None:
    """500 mA for 10 s at 3.85 V: 19.25 J, 1.3889 mAh, sampled at uneven times."""
    trace = trace_from_readings(readings(irregular_times(10.0, 0.1, 0.25, seed=1), lambda t: 500.0))
    result = energy_from_traces(trace, None, nominal_v=V)
    assert result.joules_gross == pytest.approx(0.5 * V * 10.0, rel=1e-12)
    assert result.mah == pytest.approx(500.0 * 10.0 / 3600.0, rel=1e-12)
    assert result.mah_coulomb == pytest.approx(500.0 * 10.0 / 3600.0, rel=1e-12)
    assert not result.reliable and any("no idle baseline" in w for w in result.warnings)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_piecewise_linear_current_within_one_percent_at_irregular_4_to_10_hz(seed: int) -> None:
    times = irregular_times(12.0, 0.1, 0.25, seed)  # between 4 and 10 Hz, never on the knots by design
    trace = trace_from_readings(readings(times, piecewise))
    result = energy_from_traces(trace, None, nominal_v=V)
    expected_mah = KNOTS_MA_S / 3600.0
    expected_j = KNOTS_MA_S / 1000.0 * V
    assert result.mah == pytest.approx(expected_mah, rel=0.01)
    assert result.joules_gross == pytest.approx(expected_j, rel=0.01)
    assert 4.0 <= result.sample_hz <= 10.0


def test_noisy_samples_within_one_percent() -> None:
    rng = random.Random(7)
    times = irregular_times(12.0, 0.05, 0.1, seed=8)
    trace = trace_from_readings(readings(times, lambda t: piecewise(t) + rng.gauss(0.0, 20.0)))
    result = energy_from_traces(trace, None, nominal_v=V)
    assert result.mah_coulomb == pytest.approx(KNOTS_MA_S / 3600.0, rel=0.01)


def test_idle_baseline_is_subtracted() -> None:
    """The run draws 150 mA of idle plus the inference's pattern; the baseline, measured the
    same way, draws 150 mA. What is left is the inference alone."""
    run = trace_from_readings(readings(irregular_times(12.0, 0.1, 0.2, seed=3), lambda t: 150.0 + piecewise(t)))
    base = trace_from_readings(readings(irregular_times(5.0, 0.1, 0.2, seed=4), lambda t: 150.0))
    result = energy_from_traces(run, base, nominal_v=V)
    assert result.baseline_w == pytest.approx(0.150 * V)
    assert result.mah == pytest.approx(KNOTS_MA_S / 3600.0, rel=0.01)
    assert result.mah_coulomb == pytest.approx(KNOTS_MA_S / 3600.0, rel=0.01)
    assert result.joules == pytest.approx(result.joules_gross - 0.150 * V * 12.0)
    assert result.reliable and result.source == "measured"
    per = result.per_inference(10)
    assert per["mah_per_100_inferences"] == pytest.approx(100 * result.mah / 10)
    assert per["joules_per_inference"] == pytest.approx(result.joules / 10)


def test_voltage_varies_joules_follow_v_times_i() -> None:
    times = irregular_times(10.0, 0.05, 0.1, seed=5)
    data = [(t, Battery(voltage_v=4.2 - 0.02 * t, current_ma=1000.0, charging=False)) for t in times]
    result = energy_from_traces(trace_from_readings(data), None, nominal_v=3.85)
    # integral of (4.2 - 0.02 t) * 1 A over 10 s = 42 - 1 = 41 J (exact: linear in t)
    assert result.joules_gross == pytest.approx(41.0, rel=1e-9)
    assert result.mah == pytest.approx(41.0 / (3.6 * 3.85), rel=1e-9)


def test_charging_is_flagged_unreliable() -> None:
    run = trace_from_readings(readings(irregular_times(5.0, 0.1, 0.2, seed=6), lambda t: 400.0, charging=True))
    base = trace_from_readings(readings(irregular_times(2.0, 0.1, 0.2, seed=7), lambda t: 100.0, charging=False))
    result = energy_from_traces(run, base, nominal_v=V)
    assert not result.reliable
    assert CHARGING_WARNING in result.warnings


def test_microamps_labelled_milliamps_are_converted_with_a_note() -> None:
    times = irregular_times(10.0, 0.1, 0.2, seed=9)
    trace = trace_from_readings(readings(times, lambda t: 500.0, scale=1000.0))  # 500,000 "mA"
    assert all(s.current_ma == pytest.approx(500.0) for s in trace.samples)
    assert any("taken as uA" in n for n in trace.notes)
    ok = trace_from_readings(readings(times, lambda t: 500.0))
    assert any("taken as mA" in n for n in ok.notes) and not any("uA" in n for n in ok.notes)


def test_voltage_in_microvolts_or_millivolts_is_converted() -> None:
    uv = trace_from_readings([(0.0, Battery(voltage_v=3_850_000, current_ma=100.0)), (1.0, Battery(voltage_v=3_850_000, current_ma=100.0))])
    mv = trace_from_readings([(0.0, Battery(voltage_v=3850, current_ma=100.0)), (1.0, Battery(voltage_v=3850, current_ma=100.0))])
    assert uv.samples[0].voltage_v == mv.samples[0].voltage_v == pytest.approx(3.85)
    assert any("uV" in n for n in uv.notes) and any("mV" in n for n in mv.notes)


def test_missing_voltage_falls_back_to_nominal() -> None:
    times = irregular_times(4.0, 0.1, 0.2, seed=10)
    trace = trace_from_readings(readings(times, lambda t: 250.0, volts=None), nominal_v=3.88)
    result = energy_from_traces(trace, None, nominal_v=3.88)
    assert result.joules_gross == pytest.approx(0.25 * 3.88 * 4.0)
    assert any("nominal 3.88 V" in n for n in result.notes)


def test_flipped_sign_is_corrected_with_a_note() -> None:
    times = irregular_times(6.0, 0.1, 0.2, seed=11)
    trace = trace_from_readings(readings(times, lambda t: -600.0, charging=False))  # BatteryManager style
    assert all(s.current_ma == pytest.approx(600.0) for s in trace.samples)
    assert any("sign" in n for n in trace.notes)
    assert integrate_mah(trace) == pytest.approx(600.0 * 6.0 / 3600.0)


def test_readings_without_current_are_skipped_and_an_empty_trace_is_refused() -> None:
    data = [(float(t), Battery(voltage_v=3.9, current_ma=None)) for t in range(5)]
    trace = trace_from_readings(data)
    assert trace.samples == [] and any("no current" in w for w in trace.warnings)
    with pytest.raises(ValueError, match="at least two battery samples"):
        energy_from_traces(trace, None, nominal_v=3.9)


def test_sampler_refuses_rates_below_4_hz() -> None:
    with pytest.raises(ValueError, match="below 4 Hz"):
        BatterySampler(lambda: Battery(), hz=2.0)


class ScriptedBattery:
    """A battery whose current follows a known function of time since creation, like the
    adb loopback server's scripted battery; ``fail_every`` makes some reads raise."""

    def __init__(self, current, fail_every: int = 0) -> None:
        self.t0 = time.monotonic()
        self.current = current
        self.fail_every = fail_every
        self.calls = 0
        self.lock = threading.Lock()

    def battery(self) -> Battery:
        with self.lock:
            self.calls += 1
            if self.fail_every and self.calls % self.fail_every == 0:
                raise ConnectionError("adb: device offline")
        return Battery(voltage_v=V, current_ma=self.current(time.monotonic() - self.t0), charging=False, source="scripted")


def exact_ma_s(current, t_start: float, t_end: float, steps: int = 200_000) -> float:
    h = (t_end - t_start) / steps
    return h * sum(current(t_start + (i + 0.5) * h) for i in range(steps))


def test_sampler_thread_integrates_a_scripted_battery_within_one_percent() -> None:
    ramp = [(0.0, 300.0), (0.3, 300.0), (0.7, 900.0), (1.2, 900.0)]
    battery = ScriptedBattery(lambda t: piecewise(t, ramp))
    with BatterySampler(battery.battery, hz=50.0) as sampler:
        time.sleep(1.1)
    trace = sampler.trace
    assert trace is not None and trace.sample_hz >= 4.0 and trace.read_errors == 0
    t_first, t_last = trace.samples[0].t - battery.t0, trace.samples[-1].t - battery.t0
    expected = exact_ma_s(lambda t: piecewise(t, ramp), t_first, t_last) / 3600.0
    result = energy_from_traces(trace, None, nominal_v=V)
    assert result.mah == pytest.approx(expected, rel=0.01)


def test_sampler_survives_failed_reads() -> None:
    battery = ScriptedBattery(lambda t: 400.0, fail_every=3)
    with BatterySampler(battery.battery, hz=40.0) as sampler:
        time.sleep(0.4)
    trace = sampler.trace
    assert trace is not None and trace.read_errors > 0
    assert any("device offline" in w for w in trace.warnings)
    result = energy_from_traces(trace, None, nominal_v=V)
    assert result.mah == pytest.approx(400.0 * trace.duration_s / 3600.0, rel=1e-9)
    assert any("reads failed" in w for w in result.warnings)


def test_measure_energy_subtracts_an_idle_baseline_measured_the_same_way() -> None:
    state = {"busy": False}
    battery = ScriptedBattery(lambda t: 700.0 if state["busy"] else 200.0)

    def run() -> str:
        state["busy"] = True
        time.sleep(0.6)
        state["busy"] = False
        return "done"

    out, result = measure_energy(battery.battery, run, nominal_v=V, baseline_s=0.3, hz=50.0)
    assert out == "done"
    assert result.baseline_w == pytest.approx(0.2 * V, rel=1e-6)
    # 500 mA above idle for ~0.6 s; the edges of a step cost up to half a sample period each
    assert result.mah_coulomb == pytest.approx(500.0 * 0.6 / 3600.0, rel=0.1)
    assert result.reliable


def test_scripted_adb_battery_over_the_loopback_server_within_one_percent() -> None:
    """End to end: the emulated phone behind the loopback adb server serves a scripted
    battery through sysfs (uA, uV, kernel sign convention); AdbDevice reads it over the real
    adb protocol; the sampler integrates. The answer is known analytically."""
    adb = pytest.importorskip("android_bridge.adb")
    server_mod = pytest.importorskip("android_bridge.emulator.adb_server")
    phone_mod = pytest.importorskip("android_bridge.emulator.phone")

    ramp = [(0.0, 250.0), (0.4, 250.0), (1.0, 1250.0), (1.6, 1250.0)]
    t0 = time.monotonic()  # the script's own clock, so the test knows where t = 0 is

    def script(_server_t: float) -> tuple[float, float]:
        return piecewise(time.monotonic() - t0, ramp), V

    with server_mod.AdbServer(phone_mod.EmulatedPhone(seed=0), port=0, battery_script=script) as server:
        device = adb.AdbDevice(port=server.port)
        with BatterySampler(device.battery, hz=10.0, nominal_v=V) as sampler:
            time.sleep(1.5)
    trace = sampler.trace
    assert trace is not None and trace.read_errors == 0 and trace.sample_hz >= 4.0
    expected = exact_ma_s(lambda t: piecewise(t, ramp), trace.samples[0].t - t0, trace.samples[-1].t - t0) / 3600.0
    result = energy_from_traces(trace, None, nominal_v=V)
    assert result.mah == pytest.approx(expected, rel=0.01)
    assert result.mah_coulomb == pytest.approx(expected, rel=0.01)
    assert any("kernel ABI" in n for n in result.notes)  # the adb layer's own normalisation, carried through
