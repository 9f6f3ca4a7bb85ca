"""The project's one perplexity (edgeagent.quality): prompt/completion texts tokenized by the
GGUF's own tokenizer, then scored from llama.cpp logits at the target positions only. Checked
against a plain llama-cpp-python evaluation of the whole sequence with every position's logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from edgeagent.quality import IGNORE, heldout_perplexity, text_examples  # noqa: E402

EXAMPLES = [
    {"prompt": "Previous: none\nScreen (Settings):\n[0] switch \"Wi-Fi\" off\nTask: turn on Wi-Fi\nAction: ",
     "completion": '{"action":"tap","element":"Wi-Fi","index":0}'},
    {"prompt": "Previous: none\nScreen (Clock):\n[0] button \"Add alarm\"\nTask: set an alarm\nAction: ",
     "completion": '{"action":"tap","element":"Add alarm","index":0}'},
]


@pytest.fixture(scope="module")
def gguf_path(tiny_bundle):
    from edgeagent.bundle import load_bundle

    return next(v.path for v in load_bundle(tiny_bundle).variants if v.quant == "f32")


def test_text_examples_score_the_completion_newline_and_eos(gguf_path):
    from edgeagent.engine import load_llama

    llm = load_llama(gguf_path, vocab_only=True)
    eos, newline = llm.token_eos(), llm.tokenize(b"\n", add_bos=False, special=True)
    llm.close()
    for (ids, labels), ex in zip(text_examples(gguf_path, EXAMPLES), EXAMPLES):
        n_context = labels.count(IGNORE)
        assert labels[:n_context] == [IGNORE] * n_context and IGNORE not in labels[n_context:]
        assert labels[n_context:] == ids[n_context:]
        assert ids[-1] == eos and ids[-1 - len(newline):-1] == newline


def test_heldout_perplexity_matches_a_full_logits_evaluation(gguf_path):
    from edgeagent.engine import load_llama

    pairs = text_examples(gguf_path, EXAMPLES)
    got = heldout_perplexity(gguf_path, pairs, threads=1)

    nll, count = 0.0, 0
    llm = load_llama(gguf_path, n_ctx=512, n_batch=512, n_threads=1, logits_all=True)
    for ids, labels in pairs:
        llm.reset()
        llm.eval(ids)
        scores = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
        for t in range(len(ids) - 1):
            if labels[t + 1] != IGNORE:
                row = scores[t]
                nll += float(np.log(np.exp(row - row.max()).sum()) + row.max() - row[labels[t + 1]])
                count += 1
    llm.close()

    assert got["heldout_tokens"] == count == sum(len(ids) - labels.count(IGNORE) for ids, labels in pairs)
    assert got["examples"] == len(EXAMPLES)
    assert got["heldout_nll"] == pytest.approx(nll / count, rel=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
