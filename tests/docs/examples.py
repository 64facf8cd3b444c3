"""The runnable examples of a docs page: fenced code blocks right after an ``<!-- example: NAME -->`` line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOCS_URL = "http://127.0.0.1:8000"
_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Example:
    name: str
    language: str
    code: str

    def against(self, base_url: str) -> str:
        """The code, pointed at ``base_url`` instead of the docs' default server."""
        ws_url = base_url.replace("http://", "ws://")
        return self.code.replace(DOCS_URL.replace("http://", "ws://"), ws_url).replace(DOCS_URL, base_url)


def examples(page: str) -> dict[str, Example]:
    text = (DOCS / page).read_text(encoding="utf-8")
    found = [Example(m.group(1), m.group(2), m.group(3)) for m in _EXAMPLE.finditer(text)]
    assert len({e.name for e in found}) == len(found), f"duplicate example names in {page}"
    return {e.name: e for e in found}
