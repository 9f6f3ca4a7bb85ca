"""Battery energy, measured: sample the battery during a run, integrate, subtract idle.

How it is done, and why (docs/device_specs.md, "Battery readings on Android"):

- A background thread polls ``Device.battery()`` (or any callable returning an
  ``android_bridge.device.Battery``) at >= 4 Hz: fuel gauges refresh every ~250-310 ms, so
  slower sampling misses changes.
- Power is V x I per sample; energy is its integral over time by the trapezoid rule, which
  copes with irregular sample times (adb round trips jitter).
- An idle baseline, measured the same way just before, is subtracted: what remains is
  what the inference cost, not the screen and radios.
- Readings are re-checked even though ``Battery`` is already normalised: a current above
  10,000 mA cannot come from a phone, so it is taken as microamps (the sysfs unit); a
  discharging device reporting negative current has the vendor's sign flipped; a missing
  voltage falls back to the nominal one. Each assumption is recorded in ``notes``.
- A device that charges during the run (USB power) gives a figure flagged unreliable.
- mAh = J / (3.6 x V_nominal); the coulomb count (integral of I dt) is reported beside it,
  and so is the gauge's own coulomb counter (``charge_counter``, uAh) where the phone has one:
  two independent readings of one discharge, a warning when they disagree by > 20 %.

Pure functions do the arithmetic (``trace_from_readings``, ``energy_from_traces``), so they
are tested on scripted traces with known answers; ``BatterySampler`` only adds the thread.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from android_bridge.device import Battery

MIN_SAMPLE_HZ = 4.0
MAX_PLAUSIBLE_MA = 10_000.0  # above this a "mA" value is really uA (sysfs current_now)
CHARGING_WARNING = (
    "the device was charging during the measurement: USB power corrupts the battery current "
    "(`dumpsys battery unplug` only fakes the unplug), so this figure is unreliable; use wireless adb"
)


@dataclass(frozen=True)
class PowerSample:
    t: float  # seconds on the sampler's clock
    voltage_v: float
    current_ma: float  # positive = discharging (energy leaving the battery)
    charging: bool | None = None
    charge_counter_mah: float | None = None  # the gauge's coulomb counter, when the phone has one

    @property
    def power_w(self) -> float:
        return self.voltage_v * self.current_ma / 1000.0


@dataclass
class BatteryTrace:
    samples: list[PowerSample]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    read_errors: int = 0

    @property
    def duration_s(self) -> float:
        return self.samples[-1].t - self.samples[0].t if len(self.samples) > 1 else 0.0

    @property
    def sample_hz(self) -> float:
        return (len(self.samples) - 1) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def charging(self) -> bool:
        return any(s.charging for s in self.samples)


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def trace_from_readings(readings: list[tuple[float, Battery]], nominal_v: float | None = None) -> BatteryTrace:
    """Turn timestamped ``Battery`` readings into clean power samples, re-checking units and
    sign; every assumption made lands in ``notes``, every doubt in ``warnings``."""
    notes: list[str] = []
    warnings: list[str] = []
    raw: list[PowerSample] = []
    for t, b in sorted(readings, key=lambda r: r[0]):
        for n in b.notes:
            _note(notes, f"device: {n}")
        if b.current_ma is None:
            _note(warnings, "some readings have no current (the device hides current_now); they were skipped")
            continue
        current = float(b.current_ma)
        if abs(current) > MAX_PLAUSIBLE_MA:
            current /= 1000.0
            _note(notes, f"|current| > {MAX_PLAUSIBLE_MA:,.0f} 'mA' is impossible for a phone: taken as uA (sysfs current_now) and divided by 1000")
        else:
            _note(notes, f"|current| <= {MAX_PLAUSIBLE_MA:,.0f}: taken as mA")
        volts = b.voltage_v
        if volts is None:
            if nominal_v is None:
                _note(warnings, "some readings have neither current voltage nor a nominal voltage; they were skipped")
                continue
            volts = nominal_v
            _note(notes, f"no voltage reading: used the nominal {nominal_v} V")
        elif volts > 1e5:
            volts /= 1e6
            _note(notes, "voltage above 100,000 taken as uV (sysfs voltage_now) and divided by 1e6")
        elif volts > 100:
            volts /= 1e3
            _note(notes, "voltage above 100 taken as mV and divided by 1000")
        raw.append(PowerSample(float(t), float(volts), current, b.charging, b.charge_counter_mah))

    # Sign: Battery promises positive = discharging. If the device says it is not charging
    # and the current is mostly negative, the vendor flipped the sign (BatteryManager's
    # CURRENT_NOW is positive when *charging*).
    not_charging = [s for s in raw if s.charging is False]
    if not_charging and statistics.median(s.current_ma for s in not_charging) < 0:
        raw = [PowerSample(s.t, s.voltage_v, -s.current_ma, s.charging, s.charge_counter_mah) for s in raw]
        _note(notes, "device not charging but current mostly negative: vendor sign convention flipped to positive = discharging")
    elif raw and not not_charging and statistics.median(s.current_ma for s in raw) < 0:
        _note(warnings, "current mostly negative and the charging state unknown: the sign convention is uncertain")
    if any(s.charging for s in raw):
        _note(warnings, CHARGING_WARNING)
    return BatteryTrace(raw, notes, warnings)


def trapezoid(ts: list[float], ys: list[float]) -> float:
    """Integral of y over t by the trapezoid rule; samples need not be evenly spaced."""
    return sum((t1 - t0) * (y0 + y1) / 2 for t0, t1, y0, y1 in zip(ts, ts[1:], ys, ys[1:]))


def integrate_joules(trace: BatteryTrace) -> float:
    return trapezoid([s.t for s in trace.samples], [s.power_w for s in trace.samples])


def integrate_mah(trace: BatteryTrace) -> float:
    """Coulomb count: integral of I dt, in mAh (independent of the voltage)."""
    return trapezoid([s.t for s in trace.samples], [s.current_ma for s in trace.samples]) / 3600.0


def mah_from_joules(joules: float, nominal_v: float) -> float:
    return joules / (3.6 * nominal_v)


COUNTER_TOLERANCE = 0.2  # coulomb count and counter may differ this much before a warning


def counter_mah(trace: BatteryTrace) -> tuple[float, float] | None:
    """(charge drawn in mAh, duration in s) by the gauge's own coulomb counter: its first
    reading minus its last (the counter falls as the battery discharges); None when the
    phone has no charge_counter or it never reported over the trace."""
    with_counter = [s for s in trace.samples if s.charge_counter_mah is not None]
    if len(with_counter) < 2 or with_counter[-1].t <= with_counter[0].t:
        return None
    return with_counter[0].charge_counter_mah - with_counter[-1].charge_counter_mah, with_counter[-1].t - with_counter[0].t


def counter_cross_check(run: BatteryTrace, baseline: BatteryTrace | None, coulomb_mah: float,
                        notes: list[str], warnings: list[str]) -> float | None:
    """The run's mAh above idle by the charge counter, beside the integral of current: two
    independent gauges of one discharge. Returns the counter's figure (None without one)."""
    run_c = counter_mah(run)
    if run_c is None:
        _note(notes, "no charge_counter on this device: the integral of current is not cross-checked")
        return None
    drawn, duration = run_c
    base_c = counter_mah(baseline) if baseline is not None else None
    if base_c is not None:
        drawn -= base_c[0] / base_c[1] * duration
    if coulomb_mah > 0 and abs(drawn / coulomb_mah - 1.0) > COUNTER_TOLERANCE:
        _note(warnings, f"charge_counter says {drawn:.3f} mAh, the integral of current {coulomb_mah:.3f} mAh "
                        f"(more than {COUNTER_TOLERANCE:.0%} apart): the counter's steps are coarse on short runs, "
                        "or the current's unit or sign was misread")
    return drawn


@dataclass
class EnergyResult:
    joules: float  # above the idle baseline
    joules_gross: float
    baseline_w: float | None
    duration_s: float
    mah: float  # joules / (3.6 V_nominal)
    mah_coulomb: float  # integral of (I - I_baseline) dt
    mah_charge_counter: float | None  # the gauge's coulomb counter over the run, minus the idle rate
    nominal_v: float
    samples: int
    sample_hz: float
    reliable: bool
    warnings: list[str]
    notes: list[str]
    source: str = "measured"

    def per_inference(self, n: int) -> dict[str, float]:
        return {
            "joules_per_inference": self.joules / n,
            "mah_per_inference": self.mah / n,
            "mah_per_100_inferences": 100 * self.mah / n,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def energy_from_traces(run: BatteryTrace, baseline: BatteryTrace | None, nominal_v: float) -> EnergyResult:
    """Energy of the run above the idle baseline: integral of V*I over the run, minus the
    baseline's average power times the run's duration."""
    if len(run.samples) < 2:
        raise ValueError("need at least two battery samples during the run to integrate (was the run shorter than one sample period?)")
    warnings = list(run.warnings)
    notes = list(run.notes)
    gross_j = integrate_joules(run)
    gross_mah = integrate_mah(run)
    duration = run.duration_s
    baseline_w = baseline_ma = None
    if baseline is not None:
        if len(baseline.samples) < 2 or baseline.duration_s <= 0:
            raise ValueError("the idle baseline needs at least two samples over a positive duration")
        baseline_w = integrate_joules(baseline) / baseline.duration_s
        baseline_ma = integrate_mah(baseline) * 3600.0 / baseline.duration_s
        for w in baseline.warnings:
            _note(warnings, f"baseline: {w}")
        for n in baseline.notes:
            _note(notes, f"baseline: {n}")
    else:
        _note(warnings, "no idle baseline: the figure includes the screen, radios and everything else running")
    net_j = gross_j - (baseline_w or 0.0) * duration
    net_mah = gross_mah - (baseline_ma or 0.0) * duration / 3600.0
    if run.sample_hz < MIN_SAMPLE_HZ:
        _note(warnings, f"sampled at {run.sample_hz:.1f} Hz, below {MIN_SAMPLE_HZ:.0f} Hz: fuel-gauge changes may be missed")
    if run.read_errors:
        _note(warnings, f"{run.read_errors} battery reads failed during the run")
    if net_j < 0:
        _note(warnings, "the run used less power than the idle baseline: the baseline was not representative")
    charging = run.charging or (baseline is not None and baseline.charging)
    by_counter = counter_cross_check(run, baseline, net_mah, notes, warnings)
    return EnergyResult(
        joules=net_j,
        joules_gross=gross_j,
        baseline_w=baseline_w,
        duration_s=duration,
        mah=mah_from_joules(net_j, nominal_v),
        mah_coulomb=net_mah,
        mah_charge_counter=by_counter,
        nominal_v=nominal_v,
        samples=len(run.samples),
        sample_hz=run.sample_hz,
        reliable=not charging and baseline is not None and run.sample_hz >= MIN_SAMPLE_HZ and net_j >= 0,
        warnings=warnings,
        notes=notes,
    )


class BatterySampler:
    """Polls ``read()`` in a background thread at ``hz`` while a run happens.

        with BatterySampler(device.battery, hz=10) as sampler:
            run_inference()
        trace = sampler.trace

    Each sample is stamped with the midpoint of the read on ``clock`` (an adb round trip
    takes tens of ms). A first sample is taken on start and a last one on stop, so the
    trace spans the whole run. Failed reads are counted, not raised, so one adb hiccup does
    not lose the measurement.
    """

    def __init__(
        self,
        read: Callable[[], Battery],
        hz: float = 10.0,
        nominal_v: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if hz < MIN_SAMPLE_HZ:
            raise ValueError(f"sample rate {hz} Hz is below {MIN_SAMPLE_HZ:.0f} Hz: fuel gauges refresh every ~250-310 ms")
        self.read = read
        self.period = 1.0 / hz
        self.nominal_v = nominal_v
        self.clock = clock
        self._readings: list[tuple[float, Battery]] = []
        self._errors = 0
        self._first_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trace: BatteryTrace | None = None

    def _sample(self) -> None:
        t0 = self.clock()
        try:
            reading = self.read()
        except Exception as exc:  # noqa: BLE001 - a flaky read must not end the measurement
            self._errors += 1
            self._first_error = self._first_error or f"{type(exc).__name__}: {exc}"
            return
        self._readings.append(((t0 + self.clock()) / 2, reading))

    def _loop(self) -> None:
        next_t = self.clock() + self.period
        while not self._stop.wait(max(0.0, next_t - self.clock())):
            self._sample()
            next_t += self.period
            if next_t < self.clock():  # fell behind (slow reads): don't burst to catch up
                next_t = self.clock() + self.period

    def start(self) -> BatterySampler:
        if self._thread is not None:
            raise RuntimeError("this sampler has already been started")
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="battery-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> BatteryTrace:
        if self._thread is None:
            raise RuntimeError("stop() before start()")
        self._stop.set()
        self._thread.join()
        self._sample()
        trace = trace_from_readings(self._readings, self.nominal_v)
        trace.read_errors = self._errors
        if self._first_error:
            _note(trace.warnings, f"first failed read: {self._first_error}")
        self.trace = trace
        return trace

    def __enter__(self) -> BatterySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def measure_idle(read: Callable[[], Battery], seconds: float, hz: float = 10.0, nominal_v: float | None = None) -> BatteryTrace:
    """The idle baseline: the same sampling, with nothing running."""
    sampler = BatterySampler(read, hz=hz, nominal_v=nominal_v).start()
    time.sleep(seconds)
    return sampler.stop()


def measure_energy(
    read: Callable[[], Battery],
    run: Callable[[], Any],
    nominal_v: float,
    baseline_s: float = 3.0,
    hz: float = 10.0,
) -> tuple[Any, EnergyResult]:
    """Measure an idle baseline for ``baseline_s`` seconds, then ``run()`` under the sampler.
    Returns what ``run`` returned and the energy above idle."""
    baseline = measure_idle(read, baseline_s, hz, nominal_v) if baseline_s > 0 else None
    with BatterySampler(read, hz=hz, nominal_v=nominal_v) as sampler:
        result = run()
    assert sampler.trace is not None
    return result, energy_from_traces(sampler.trace, baseline, nominal_v)
