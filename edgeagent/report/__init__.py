"""Reports a person would rather look at than read: PNG plots (``plots``, matplotlib with the
Agg backend, from the ``report`` extra) and one self-contained HTML file (``html``, jinja2,
the PNGs embedded as base64)."""
