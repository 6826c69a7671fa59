"""Requests a client makes (prepare, start, stop) parsed from JSON with field-naming errors."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tango_oet.domain.errors import InvalidRequest
from tango_oet.domain.scripts import Script, parse_script
from tango_oet.domain.text import find_surrogate

_IDENT_MAX = 200
#: A JSON escape of a UTF-16 surrogate (json.loads pairs two of them into one character).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")

#: How deeply containers in call arguments may nest. Deeper data is refused at the door: it
#: gains a script nothing, and ~900 levels break pickling (RecursionError) on the way to the
#: worker, or JSON rendering of summaries.
MAX_NESTING = 64


@dataclass(frozen=True)
class ProcedureInput:
    """Positional and keyword arguments of one function call; JSON-safe by construction."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"args": list(self.args), "kwargs": dict(self.kwargs)}

    def check(self, name: str) -> None:
        """Raise InvalidRequest naming `name.args[i]`/`name.kwargs.k` if it nests too deeply."""
        prefix = f"{name}." if name else ""
        for i, value in enumerate(self.args):
            check_nesting(value, f"{prefix}args[{i}]")
        for key, value in self.kwargs.items():
            check_nesting(value, f"{prefix}kwargs.{key}")


def check_nesting(value: object, name: str, limit: int = MAX_NESTING) -> None:
    """Raise InvalidRequest(name) if lists/tuples/dicts in `value` nest deeper than `limit`.

    Iterative, so it cannot itself overflow the stack; a container that contains itself is
    infinitely deep and refused. A shared sub-container is walked again only when met deeper.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    seen: dict[int, int] = {}
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            raise InvalidRequest(name, f"nests deeper than {limit} levels of lists/objects")
        if seen.get(id(item), 0) >= depth:
            continue  # explored before at this depth or deeper: nothing new below it
        seen[id(item)] = depth
        stack.extend((child, depth + 1) for child in children)


@dataclass(frozen=True)
class PrepareRequest:
    script: Script
    init: ProcedureInput = ProcedureInput()


@dataclass(frozen=True)
class StartRequest:
    procedure_id: int
    function: str = "main"
    call: ProcedureInput = ProcedureInput()
    force: bool = False
    timeout: float | None = None  # wall-clock seconds for this call; then it is stopped, FAILED


@dataclass(frozen=True)
class StopRequest:
    procedure_id: int
    abort: bool = False


def _load_object(text: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise InvalidRequest(what, f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(what, f"nests deeper than {MAX_NESTING} levels") from None
    if not isinstance(obj, dict):
        raise InvalidRequest(what, f"must be a JSON object, got {type(obj).__name__}")
    if (
        _SURROGATE_ESCAPE.search(text)
        or find_surrogate(text) is not None
        or _NUL_ESCAPE.search(text)
    ):
        _check_text(obj)  # only then can a string hold a lone surrogate or a NUL
    return obj


MAX_TIMEOUT_S = 366 * 86400.0  # a Start's `timeout`: at most a year (a float must stay exact)
_NUL_ESCAPE = re.compile(r"\\u0000", re.IGNORECASE)


def _check_text(obj: dict[str, Any]) -> None:
    """Refuse a lone surrogate (a JSON escape such as "\\udcff") or a NUL in any key or string.

    UTF-8 cannot carry a lone surrogate: it could be neither stored nor sent back to a client.
    A NUL ends a C string: a path, a Tango string or a process argument would be cut at it.
    """
    stack: list[tuple[object, str]] = [(obj, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            at = find_surrogate(item)
            if at is not None:
                problem = f"holds a lone surrogate (U+{ord(item[at]):04X}), which is not text"
                raise InvalidRequest(path or "request", problem)
            if "\x00" in item:
                raise InvalidRequest(path or "request", "holds a NUL character (U+0000)")
        elif isinstance(item, dict):
            for key, value in item.items():
                child = f"{path}.{key}" if path else str(key)
                stack.append((value, child))
                stack.append((key, path))  # popped first: the path above names this key
        elif isinstance(item, list):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(item))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise InvalidRequest(f"{prefix}{unknown[0]}", f"unknown field; allowed: {sorted(allowed)}")


def parse_id(value: object, name: str = "id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"must be an integer, got {value!r}")
    if value <= 0:
        raise InvalidRequest(name, f"must be > 0, got {value}")
    return value


def parse_input(obj: object, name: str) -> ProcedureInput:
    """Parse `{"args": [...], "kwargs": {...}}`."""
    if obj is None:
        return ProcedureInput()
    if not isinstance(obj, dict):
        raise InvalidRequest(name, f"must be an object with args/kwargs, got {obj!r}")
    _check_keys(obj, {"args", "kwargs"}, name)
    parsed = ProcedureInput(
        args=tuple(_parse_args(obj.get("args", []), f"{name}.args")),
        kwargs=_parse_kwargs(obj.get("kwargs", {}), f"{name}.kwargs"),
    )
    parsed.check(name)
    return parsed


def _parse_args(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(name, f"must be a list, got {value!r}")
    return value


def _parse_kwargs(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(name, f"must be an object, got {value!r}")
    for key in value:
        if not key.isidentifier():
            raise InvalidRequest(f"{name}.{key}", "is not a valid Python keyword argument name")
    return value


def parse_prepare(text: str) -> PrepareRequest:
    obj = _load_object(text, "request")
    _check_keys(obj, {"script", "git", "create_env", "source", "init"}, "")
    if "script" not in obj:
        raise InvalidRequest("script", "is required")
    script = parse_script(obj["script"], obj)
    return PrepareRequest(script=script, init=parse_input(obj.get("init"), "init"))


def parse_function_name(value: object) -> str:
    if not isinstance(value, str) or not value.isidentifier() or len(value) > _IDENT_MAX:
        raise InvalidRequest("function", f"must be a Python identifier, got {value!r}")
    if value.startswith("_"):
        raise InvalidRequest("function", f"private functions cannot be called: {value!r}")
    if value == "init":
        raise InvalidRequest("function", "init runs automatically at Prepare")
    return value


def parse_start(text: str) -> StartRequest:
    obj = _load_object(text, "request")
    _check_keys(obj, {"id", "function", "args", "kwargs", "force", "timeout"}, "")
    if "id" not in obj:
        raise InvalidRequest("id", "is required")
    force = obj.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequest("force", f"must be true or false, got {force!r}")
    call = ProcedureInput(
        args=tuple(_parse_args(obj.get("args", []), "args")),
        kwargs=_parse_kwargs(obj.get("kwargs", {}), "kwargs"),
    )
    call.check("")
    timeout = obj.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        raise InvalidRequest(
            "timeout", f"must be seconds > 0 and <= {MAX_TIMEOUT_S}, got {timeout!r}"
        )
    return StartRequest(
        procedure_id=parse_id(obj["id"]),
        function=parse_function_name(obj.get("function", "main")),
        call=call,
        force=force,
        timeout=None if timeout is None else float(timeout),
    )


def parse_stop(text: str) -> StopRequest:
    obj = _load_object(text, "request")
    _check_keys(obj, {"id", "abort"}, "")
    if "id" not in obj:
        raise InvalidRequest("id", "is required")
    abort = obj.get("abort", False)
    if not isinstance(abort, bool):
        raise InvalidRequest("abort", f"must be true or false, got {abort!r}")
    return StopRequest(procedure_id=parse_id(obj["id"]), abort=abort)


def parse_gc_request(text: str) -> tuple[int | None, float | None]:
    """Parse `{"keep": N, "max_age_days": D}` (both optional) of a garbage collection."""
    obj = _load_object(text or "{}", "request")
    _check_keys(obj, {"keep", "max_age_days"}, "")
    keep = obj.get("keep")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise InvalidRequest("keep", f"must be an integer >= 0, got {keep!r}")
    age = obj.get("max_age_days")
    if age is not None and (isinstance(age, bool) or not isinstance(age, int | float) or age < 0):
        raise InvalidRequest("max_age_days", f"must be a number >= 0, got {age!r}")
    return keep, None if age is None else float(age)


def parse_list_scripts(text: str) -> str | None:
    """Parse `{}` or `{"root": "<one of ScriptRoots>"}` of ListScripts; the root or None."""
    obj = _load_object(text or "{}", "request")
    _check_keys(obj, {"root"}, "")
    root = obj.get("root")
    if root is not None and (not isinstance(root, str) or not root):
        raise InvalidRequest("root", f"must be a non-empty string, got {root!r}")
    return root
