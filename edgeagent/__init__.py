"""edgeagent: put an LLM agent on a phone. Convert, run, profile.

The runtime package never imports torch; the converter lives in ``converters``.
"""

__version__ = "0.1.0"
