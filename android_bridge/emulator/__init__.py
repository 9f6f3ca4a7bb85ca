"""The emulated phone: pure-Python apps, uiautomator XML, pillow screenshots, tasks."""
