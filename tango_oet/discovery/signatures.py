"""A script's module docstring and public functions, described from its source by `ast`.

Nothing of the script runs: a module-level side effect cannot happen here. The description
has the shape of the summary's `functions` (INTERFACE.md "Parameters and discovery"):
parameters with their kind, whether they are required, their default as JSON when it is a
literal (else its source text, flagged), and annotations as written in the source.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

KINDS = {
    "posonly": "POSITIONAL_ONLY",
    "arg": "POSITIONAL_OR_KEYWORD",
    "vararg": "VAR_POSITIONAL",
    "kwonly": "KEYWORD_ONLY",
    "kwarg": "VAR_KEYWORD",
}


@dataclass(frozen=True)
class ScriptDescription:
    """What a script says about itself; `error` when its source cannot be read or parsed."""

    doc: str | None = None
    functions: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"doc": self.doc, "functions": self.functions}
        if self.error is not None:
            out["error"] = self.error
        return out


def describe_source(source: str, filename: str = "<script>") -> ScriptDescription:
    """Describe `source` without running it; a syntax error is described, not raised."""
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes in the source
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        return ScriptDescription(
            error=f"{type(exc).__name__}: {exc.msg if isinstance(exc, SyntaxError) else exc}{where}"
        )
    functions = {
        node.name: describe_function(node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }
    return ScriptDescription(doc=ast.get_docstring(tree), functions=functions)


def describe_function(node: ast.FunctionDef) -> dict[str, Any]:
    """{"doc", "parameters": [...]} of one function definition."""
    args = node.args
    params: list[dict[str, Any]] = []
    positional = [*args.posonlyargs, *args.args]
    # Defaults belong to the last positional parameters.
    first_default = len(positional) - len(args.defaults)
    for i, arg in enumerate(positional):
        kind = "posonly" if i < len(args.posonlyargs) else "arg"
        default = args.defaults[i - first_default] if i >= first_default else None
        params.append(_parameter(arg, kind, default, required=default is None))
    if args.vararg is not None:
        params.append(_parameter(args.vararg, "vararg", None, required=False))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(_parameter(arg, "kwonly", kw_default, required=kw_default is None))
    if args.kwarg is not None:
        params.append(_parameter(args.kwarg, "kwarg", None, required=False))
    return {"doc": ast.get_docstring(node), "parameters": params}


def _parameter(
    arg: ast.arg, kind: str, default: ast.expr | None, *, required: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": arg.arg,
        "kind": KINDS[kind],
        "required": required,
        "annotation": ast.unparse(arg.annotation) if arg.annotation is not None else None,
    }
    if default is not None:
        try:
            out["default"] = _json_literal(ast.literal_eval(default))
        except ValueError:
            out["default"] = ast.unparse(default)
            out["default_is_source"] = True  # not a JSON value: its source text, as written
    return out


def _json_literal(value: Any) -> Any:
    """A literal as JSON, or ValueError (bytes, sets, complex numbers are not JSON)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_literal(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_literal(v) for k, v in value.items()}
    raise ValueError(f"not a JSON value: {value!r}")
