"""The architecture document's state diagram is generated from the transition table."""

from __future__ import annotations

from pathlib import Path

from tango_oet.domain.states import to_mermaid

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_state_diagram_in_docs_matches_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin = text.index("<!-- BEGIN GENERATED STATE DIAGRAM -->")
    end = text.index("<!-- END GENERATED STATE DIAGRAM -->")
    block = text[begin:end].split("```mermaid\n", 1)[1].rsplit("```", 1)[0]
    assert block == to_mermaid(), "regenerate the diagram in docs/architecture.md"
