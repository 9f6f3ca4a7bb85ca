"""A run's trace: steps.jsonl, one screenshot per step with the action drawn, index.html.

``steps.jsonl`` holds what the agent saw and did (observation, raw model output, action,
timings, the safety gate's decision); the HTML page steps through the screenshots so a
person can see where an episode went wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, select_autoescape

from android_bridge.actions import Action
from android_bridge.device import Screen
from edgeagent.agent.loop import RunResult, StepRecord
from edgeagent.atomic import write_text

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgeagent trace: {{ instruction }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#side{width:420px;overflow:auto;padding:12px;border-right:1px solid #ddd}
#main{flex:1;display:flex;align-items:center;justify-content:center;background:#222}
#main img{max-height:96vh;max-width:100%}
.step{padding:6px;border-radius:6px;cursor:pointer;margin-bottom:4px}
.step.cur{background:#e8f0fe}.bad{color:#b00020}
pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:6px}
</style></head><body>
<div id="side"><h3>{{ instruction }}</h3>
<p>status <b>{{ status }}</b>{% if answer %}, answer <b>{{ answer }}</b>{% endif %} · {{ steps|length }} steps · {{ '%.2f'|format(seconds) }} s</p>
<p>Keys: ← → to step.</p>
{% for s in steps %}
<div class="step" id="s{{ loop.index0 }}" onclick="show({{ loop.index0 }})">
<b>{{ s.step }}</b> {{ s.action_json }}{% if s.error %} <span class="bad">{{ s.error }}</span>{% endif %}
{% if s.sensitive %}<br><span class="bad">sensitive ({{ s.sensitive }}): {{ 'allowed' if s.allowed else 'denied' }}</span>{% endif %}
<pre>{{ s.observation }}</pre>
<small>{{ s.timing }}</small></div>
{% endfor %}</div>
<div id="main"><img id="shot" alt="screenshot"></div>
<script>
const shots = {{ shots|tojson }};
let cur = 0;
function show(i){ if(i<0||i>=shots.length) return;
 document.querySelectorAll('.step').forEach(e=>e.classList.remove('cur'));
 document.getElementById('s'+i).classList.add('cur');
 document.getElementById('shot').src = shots[i]; cur = i; }
document.addEventListener('keydown', e => { if(e.key==='ArrowRight') show(cur+1); if(e.key==='ArrowLeft') show(cur-1); });
show(0);
</script></body></html>
"""


class TraceWriter:
    """Writes one episode's trace into ``directory`` (created if missing)."""

    def __init__(self, directory: Path | str, instruction: str, task: dict | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.instruction = instruction
        self.task = task
        self._steps: list[StepRecord] = []
        self._jsonl = open(self.dir / "steps.jsonl", "w", encoding="utf-8")

    def record(self, step: StepRecord, screen: Screen, action: Action | None) -> None:
        from android_bridge.emulator.render import draw_action

        image = screen.image
        if action is not None:
            image = draw_action(image, action, screen)
        image.save(self.dir / f"step_{step.step:03d}.png")
        line = {"task": self.task, "instruction": self.instruction, **step.__dict__}
        self._jsonl.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        self._jsonl.flush()
        self._steps.append(step)

    def close(self, result: RunResult) -> None:
        self._jsonl.close()
        env = Environment(autoescape=select_autoescape(default=True))
        steps = []
        for s in self._steps:
            m = s.metrics
            timing = ", ".join(f"{k} {m[k]:.1f}" for k in ("ttft_ms", "tpot_ms") if isinstance(m.get(k), (int, float)))
            steps.append({**s.__dict__, "action_json": json.dumps(s.action, ensure_ascii=False) if s.action else "(no action)",
                          "timing": timing})
        html = env.from_string(_PAGE).render(
            instruction=self.instruction, status=result.status, answer=result.answer, seconds=result.seconds,
            steps=steps, shots=[f"step_{s.step:03d}.png" for s in self._steps],
        )
        write_text(self.dir / "index.html", html)
