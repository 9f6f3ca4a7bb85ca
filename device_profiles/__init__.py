"""Device profiles shipped with edgeagent: one TOML file per device (SoC, RAM, bandwidth,
compute, power, battery, runtime flags, and the sources of every number).

This package holds data only. Load the files with ``edgeagent.profiles.load_profile(name)``,
which reads them through ``importlib.resources`` (so they work from an installed wheel) and
validates them. ``host.toml`` describes the machine edgeagent runs on; ``edgeagent
calibrate -o device_profiles/host.toml`` rewrites it with figures measured here.
"""
