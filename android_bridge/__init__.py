"""Devices the agent acts on: real phones over adb, and the emulated phone."""
