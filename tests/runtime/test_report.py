"""Reports: the Pareto front, PNGs that are real images of a readable size, and one HTML file
with the PNGs embedded, autoescaped, written by `select --html/--png` and `profile --html/--png`."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("matplotlib")

from edgeagent.cli import app  # noqa: E402
from edgeagent.report.html import Report, render, table_from, write  # noqa: E402
from edgeagent.report.plots import pareto_front, profile_png, tradeoff_png  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_keeps_exactly_the_undominated_points() -> None:
    # (cost, quality): b is beaten by a (cheaper, better); d ties c's cost with less quality
    points = [(1.0, 0.9), (2.0, 0.8), (3.0, 1.0), (3.0, 0.95), (0.5, 0.5), (0.5, 0.5)]
    assert pareto_front(points) == [4, 5, 0, 2]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def _row(vid: str, step_ms: float, mah: float, rel: float | None, fits: bool, selected: bool = False) -> dict:
    return {"id": vid, "fits": fits, "selected": selected, "reasons": [] if fits else ["TTFT 900 ms > 500 ms"],
            "quality": {"relative": rel, "basis": "task_success" if rel is not None else None},
            "estimate": {"step_ms": step_ms, "mah_per_100_inferences": mah, "memory_mb": 100.0, "ttft_ms": 10.0,
                         "tokens_per_s": 50.0}}


SELECTION = {
    "bundle": "/x/bundle", "label": "hand-made bundle: variants", "profile": "snapdragon-8-gen-2",
    "constraints": {"max_ttft_ms": 500.0, "min_tokens_per_s": 20.0, "max_memory_mb": 3604.5, "min_quality": 0.9,
                    "max_mah_per_100": 2.0},
    "workload": {"prompt_tokens": 256, "gen_tokens": 16},
    "variants": [_row("m-f32", 900.0, 3.1, 1.0, False), _row("m-q8_0", 400.0, 1.2, 0.97, True, True),
                 _row("m-q4_k_m", 250.0, 0.8, 0.75, False), _row("m-x", 300.0, 1.0, None, False)],
}


def _image(png: bytes) -> Image.Image:
    assert png.startswith(PNG_MAGIC)
    return Image.open(io.BytesIO(png))


def test_tradeoff_png_is_a_real_readable_image() -> None:
    png = tradeoff_png(SELECTION)
    img = _image(png)
    assert img.width >= 1000 and img.height >= 500
    assert len(png) > 20_000  # points, labels, lines: not an empty canvas
    colors = img.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colors) > 50


def test_profile_png_has_the_timings_panel() -> None:
    steps = [{"call": i, "ttft_ms": 20.0 + i, "decode_ms": 10.0, "total_ms": 30.0 + i} for i in range(30)]
    result = {"per_step": steps, "measured_here": {"where": "this machine"}, "variant": {"id": "m-q8_0"},
              "device": "host", "profile": "snapdragon-8-gen-2", "workload": {"runs": 30}}
    with_tradeoffs, alone = _image(profile_png(result, SELECTION)), _image(profile_png(result, None))
    assert with_tradeoffs.height > alone.height >= 400


def test_html_embeds_the_png_and_escapes_what_came_from_a_manifest(tmp_path) -> None:
    png = tradeoff_png(SELECTION)
    report = Report(title="t <b>", subtitle="s", images=[("caption", png)],
                    tables=[table_from("Variants", ["variant", "MiB"], [["<script>alert(1)</script>", 12.345]])],
                    warnings=["charging"], notes=["n"])
    html = render(report)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "t &lt;b&gt;" in html and "12.3" in html and "charging" in html
    data = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html).group(1)
    assert base64.b64decode(data) == png
    path = write(report, tmp_path / "r.html")
    assert path.read_text() == html and [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left


def test_select_and_profile_write_their_reports(tiny_bundle, tmp_path) -> None:
    r = CliRunner().invoke(app, ["select", "--bundle", str(tiny_bundle), "--profile", "snapdragon-8-gen-2",
                                 "--png", str(tmp_path / "s.png"), "--html", str(tmp_path / "s.html")])
    assert r.exit_code == 0, r.output
    assert _image((tmp_path / "s.png").read_bytes()).width >= 1000
    html = (tmp_path / "s.html").read_text()
    assert "data:image/png;base64," in html and "tiny-q8_0" in html and "SELECTED" in html

    r = CliRunner().invoke(app, ["profile", "--bundle", str(tiny_bundle), "--profile", "snapdragon-8-gen-2",
                                 "--runs", "5", "--threads", "1", "--png", str(tmp_path / "p.png"),
                                 "--html", str(tmp_path / "p.html"), "--json"])
    assert r.exit_code == 0, r.output
    img = _image((tmp_path / "p.png").read_bytes())
    assert img.width >= 1000 and img.height >= 900
    html = (tmp_path / "p.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    assert "Measured here beside estimated on the target" in html and "mAh / 100 inferences" in html
