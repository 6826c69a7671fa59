"""Scripts describe themselves from their source: nothing of theirs runs (INTERFACE v2
"Parameters and discovery")."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tango_oet.discovery import ScriptCatalog, describe_source

SCRIPT = textwrap.dedent('''
    """Observe a field."""
    from os import system
    import json

    LIMIT = 3

    def main(field: str, repeats: int = 2, /, *names: str, dry: bool = False,
             offsets: list[float] = [0.0, 1.5], when=object(), **extra: "dict[str, int]") -> None:
        """Point and integrate."""

    def init(a, b=None, *, c):
        pass

    def _helper():
        pass

    class Thing:
        def method(self):
            pass

    async def later():
        pass
''')


def test_every_parameter_kind_default_and_annotation_is_described_as_written() -> None:
    d = describe_source(SCRIPT)
    assert d.error is None
    assert d.doc == "Observe a field."
    assert set(d.functions) == {"main", "init"}  # not imported, private, classes or async
    main = d.functions["main"]
    assert main["doc"] == "Point and integrate."
    assert main["parameters"] == [
        {"name": "field", "kind": "POSITIONAL_ONLY", "required": True, "annotation": "str"},
        {"name": "repeats", "kind": "POSITIONAL_ONLY", "required": False, "annotation": "int",
         "default": 2},
        {"name": "names", "kind": "VAR_POSITIONAL", "required": False, "annotation": "str"},
        {"name": "dry", "kind": "KEYWORD_ONLY", "required": False, "annotation": "bool",
         "default": False},
        {"name": "offsets", "kind": "KEYWORD_ONLY", "required": False,
         "annotation": "list[float]", "default": [0.0, 1.5]},
        {"name": "when", "kind": "KEYWORD_ONLY", "required": False, "annotation": None,
         "default": "object()", "default_is_source": True},
        {"name": "extra", "kind": "VAR_KEYWORD", "required": False,
         "annotation": "'dict[str, int]'"},
    ]  # fmt: skip
    init = d.functions["init"]["parameters"]
    assert [(p["name"], p["kind"], p["required"]) for p in init] == [
        ("a", "POSITIONAL_OR_KEYWORD", True),
        ("b", "POSITIONAL_OR_KEYWORD", False),
        ("c", "KEYWORD_ONLY", True),
    ]
    assert init[1]["default"] is None and "default_is_source" not in init[1]


def test_a_syntax_error_is_described_not_raised() -> None:
    d = describe_source("def main(:\n    pass\n")
    assert d.functions == {} and d.error is not None and "SyntaxError" in d.error
    assert "line 1" in d.error


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "scripts"
    (root / "sub").mkdir(parents=True)
    (root / "good.py").write_text('"""Good."""\ndef main():\n    pass\n')
    (root / "sub" / "broken.py").write_text("def main(:\n")
    marker = tmp_path / "side-effect"
    (root / "effect.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef main():\n    pass\n"
    )
    (root / "notes.txt").write_text("not a script")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.py").write_text("def main():\n    pass\n")
    return root


def test_a_tree_is_listed_with_a_broken_file_described_and_no_side_effect(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    entries, truncated = ScriptCatalog([root]).list()
    assert not truncated
    by_name = {Path(e["uri"].removeprefix("file://")).name: e for e in entries}
    assert set(by_name) == {"good.py", "broken.py", "effect.py"}
    assert by_name["good.py"]["doc"] == "Good." and "main" in by_name["good.py"]["functions"]
    assert "SyntaxError" in by_name["broken.py"]["error"]
    assert "main" in by_name["effect.py"]["functions"]
    assert not (tmp_path / "side-effect").exists()  # described, never executed
    assert [e["uri"] for e in entries] == sorted(e["uri"] for e in entries)


def test_unchanged_files_come_from_the_cache_and_changed_ones_are_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tango_oet.discovery.catalog as catalog_module

    described: list[str] = []
    real = catalog_module.describe_source

    def counting(source: str, filename: str = "<script>") -> Any:
        described.append(Path(filename).name)
        return real(source, filename)

    monkeypatch.setattr(catalog_module, "describe_source", counting)
    root = _tree(tmp_path)
    catalog = ScriptCatalog([root])
    catalog.list()
    assert sorted(described) == ["broken.py", "effect.py", "good.py"]
    described.clear()
    catalog.list()
    assert described == []  # nothing changed: nothing parsed
    good = root / "good.py"
    good.write_text("def observe(x):\n    pass\n")
    entries, _ = catalog.list()
    assert described == ["good.py"]
    assert set(next(e for e in entries if e["uri"].endswith("/good.py"))["functions"]) == {
        "observe"
    }


def test_listing_is_bounded_in_files_and_bytes(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(5):
        (root / f"s{i}.py").write_text("def main():\n    pass\n")
    (root / "big.py").write_text("x = 1\n" * 100)
    entries, truncated = ScriptCatalog([root], max_files=3).list()
    assert truncated and len(entries) == 3
    entries, truncated = ScriptCatalog([root], max_file_bytes=100).list()
    big = next(e for e in entries if e["uri"].endswith("/big.py"))
    assert not truncated and "larger than" in big["error"]


def test_only_the_roots_are_listed(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    outside = tmp_path / "outside.py"
    outside.write_text("def main():\n    pass\n")
    (root / "link.py").symlink_to(outside)
    catalog = ScriptCatalog([root])
    assert not any(e["uri"].endswith("outside.py") for e in catalog.list()[0])
    with pytest.raises(ValueError, match="not one of ScriptRoots"):
        catalog.list(tmp_path)
    assert len(catalog.list(root)[0]) == 3
