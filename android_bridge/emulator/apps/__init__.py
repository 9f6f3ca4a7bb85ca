"""The emulated phone's apps, in launcher order. Each module is one app with its own pages."""

from __future__ import annotations

from android_bridge.emulator.apps.base import App
from android_bridge.emulator.apps.browser import BrowserApp
from android_bridge.emulator.apps.calculator import CalculatorApp
from android_bridge.emulator.apps.clock import ClockApp
from android_bridge.emulator.apps.contacts import ContactsApp
from android_bridge.emulator.apps.launcher import Launcher
from android_bridge.emulator.apps.messages import MessagesApp
from android_bridge.emulator.apps.notes import NotesApp
from android_bridge.emulator.apps.settings import SettingsApp
from android_bridge.emulator.apps.shop import ShopApp

APPS: tuple[type[App], ...] = (
    SettingsApp, ClockApp, ContactsApp, MessagesApp, NotesApp, CalculatorApp, BrowserApp, ShopApp,
)

__all__ = ["APPS", "App", "Launcher"]
