"""YAML files validated by pydantic models, with errors a person can fix at once.

For the loaders of user-written files (policies first). :func:`validate_yaml` parses YAML with
the 1.2 booleans, rejects duplicate keys, validates the data with a pydantic model and turns
every error into one line ``SOURCE:LINE: field.path[2]: what is wrong (got VALUE)``: the line
comes from walking the error's location through the YAML node tree, the allowed keys and
choices from walking it through the model's types. All lines are reported, first line first.

Every file is bounded before it is believed: :func:`read_text_file` reads at most a limit of
bytes (so ``/dev/zero`` or a 10 MB file fails at once), and :func:`validate_yaml` refuses
text over :data:`MAX_YAML_BYTES`, more than :data:`MAX_YAML_ALIASES` aliases, nesting deeper
than :data:`MAX_YAML_DEPTH`, aliases that refer to themselves, and documents that expand to
more than :data:`MAX_YAML_VALUES` values through their aliases (a "billion laughs") — each
in one line naming the limit, before any value is built.

It also holds the scalar types such files share: durations written ``30s`` or ``5m`` and held
as float seconds, percentages, fractions, quantiles, URLs and email addresses.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, PlainSerializer
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from backout.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = Sequence[str | int]


# Limits on user-written YAML. The largest real policy (examples/policies/default.yaml, fully
# commented) is 6 KB with no alias; pure-Python PyYAML parses about 200 KB/s on a busy
# machine, so 64 KiB keeps the worst accepted file well under a second.
MAX_YAML_BYTES = 64 * 1024
MAX_YAML_ALIASES = 64
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 50_000  # scalars, lists and mappings once every alias is expanded
# JSON files (contracts, release configs) are parsed by orjson in C: a larger bound.
MAX_JSON_BYTES = 1 << 20


class YamlLimitError(yaml.YAMLError):
    """A YAML document over one of the limits above, at ``mark`` (None: the whole text)."""

    def __init__(self, message: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


class YamlLoader(yaml.SafeLoader):
    """YAML with the 1.2 booleans: only true/false are booleans, so ``on:`` is a key and
    ``mode: no`` is not silently false. Counts aliases and nesting while composing, and
    stops at :data:`MAX_YAML_ALIASES` and :data:`MAX_YAML_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise YamlLimitError(
                    f"more than {MAX_YAML_ALIASES} YAML aliases (*name), the limit that stops "
                    "alias bombs: write the values out",
                    self.mark(),
                )
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise YamlLimitError(
                    f"nested deeper than {MAX_YAML_DEPTH} levels, the limit for YAML files: flatten it",
                    self.mark(),
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def mark(self) -> yaml.Mark | None:
        """Where the next event starts (the node being composed)."""
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it untyped
        return event.start_mark  # type: ignore[no-any-return]


YamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def expanded_values(root: yaml.Node) -> int:
    """How many values (scalars, lists, mappings, keys) ``root`` holds once every alias is
    expanded; raises :class:`YamlLimitError` above :data:`MAX_YAML_VALUES` or on an alias
    inside the collection it names. Linear in the composed nodes: shared nodes are counted
    once and multiplied, never walked again."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] < 0:
                raise YamlLimitError(
                    "an alias (*name) inside the collection it names: write the values out",
                    node.start_mark,
                )
            return sizes[key]
        sizes[key] = -1  # in progress: meeting it again below is a cycle
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(v) for v in node.value)
        else:
            n = 1
        if n > MAX_YAML_VALUES:
            raise YamlLimitError(
                f"the YAML expands to more than {MAX_YAML_VALUES:,} values through its aliases, the "
                "limit that stops alias bombs: write the values out",
                node.start_mark,
            )
        sizes[key] = n
        return n

    return size(root)


def read_text_file(
    path: str | Path, *, what: str, limit: int, error: type[ConfigError] = ConfigError
) -> str:
    """The UTF-8 text of the file at ``path``, reading at most ``limit`` bytes: a larger
    file, a device or a missing file is ``error`` in one line naming the path and the fix."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found: check the path") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(
            f"{path}: {what} is larger than {limit:,} bytes, the limit for such files: "
            "is it the right file?"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start:,} is not)") from None


# --- scalar types for config models -----------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_HINT = "must be a duration such as 30s, 5m, 1h, 250ms, 1m30s or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds from ``30s``, ``5m``, ``1h``, ``1d``, ``250ms``, ``1m30s`` or a number."""
    if isinstance(value, bool):
        raise ValueError(_DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif parts and "".join(n + u for n, u in parts) == text:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        else:
            raise ValueError(_DURATION_HINT)
    else:
        raise ValueError(_DURATION_HINT)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a duration of zero or more seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 3600 -> ``1h``, 90 -> ``90s``, 0.25 -> ``250ms``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000, 3)
    return f"{ms:g}ms" if seconds < 1 else f"{seconds:g}s"


# Float seconds in Python; the written spelling (``30s``) in JSON and YAML output.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+\S*", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise ValueError("must be an email address such as oncall@example.com")
    return value


Percent = Annotated[float, Field(gt=0, le=100), PlainSerializer(_number, when_used="json")]
Url = Annotated[str, AfterValidator(_url)]
Email = Annotated[str, AfterValidator(_email)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Quantile = Annotated[float, Field(gt=0, lt=1)]


def rule_error(field: str, message: str) -> PydanticCustomError:
    """A validator's error for a rule across fields, pointed at ``field`` (a dotted path
    inside the validated model, such as ``steps.2`` or ``gate.horizon``)."""
    return PydanticCustomError("config_rule", message, {"field": field})


# --- loading -------------------------------------------------------------------------------


def validate_yaml(
    model: type[M],
    text: str,
    source: str,
    *,
    error: type[ConfigError] = ConfigError,
    what: str = "the file",
) -> M:
    """Parse ``text`` and validate it as ``model``; raise ``error`` with every problem, one
    per line, each starting ``source:line:``. Text over the limits of this module is one
    line naming the limit, raised before any value is built."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise error(
            f"{source}: {size:,} bytes is larger than {MAX_YAML_BYTES:,} bytes, the limit for "
            f"{what}: is it the right file?"
        )
    try:
        loader = YamlLoader(text)  # the reader refuses control characters at once
    except yaml.YAMLError as exc:
        raise error(f"{source}: not YAML text: {' '.join(str(exc).split())}") from None
    try:
        node = loader.get_single_node()
        if node is not None:
            expanded_values(node)
        data = {} if node is None else loader.construct_document(node)
    except YamlLimitError as exc:
        where = f"{source}:{exc.mark.line + 1}" if exc.mark else source
        raise error(f"{where}: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise error(f"{where}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise error(f"{source}:{line}: {what} is a mapping of fields, not a {type(data).__name__}")
    problems = duplicate_keys(node, ()) if node is not None else []
    try:
        result = model.model_validate(data)
    except PydanticValidationError as exc:
        problems += [describe(e, model, node) for e in exc.errors(include_url=False)]
    if problems:
        problems.sort(key=lambda p: p[0])  # stable: errors on one line keep pydantic's order
        raise error("\n".join(f"{source}:{line}: {msg}" for line, msg in problems))
    return result


def duplicate_keys(node: yaml.Node, path: Loc) -> list[tuple[int, str]]:
    """(line, message) for every repeated key: YAML keeps the last silently, we must not."""
    out: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key, line = str(k.value), k.start_mark.line + 1
            if key in seen:
                out.append(
                    (line, f"{dotted([*path, key])}: duplicate key (first on line {seen[key]})")
                )
            seen.setdefault(key, line)
            out += duplicate_keys(v, [*path, key])
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += duplicate_keys(v, [*path, i])
    return out


def dotted(parts: Loc) -> str:
    """``rollout.steps[2]`` from ``("rollout", "steps", 2)``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(top level)"


def describe(err: Any, model: type[BaseModel], root: yaml.Node | None) -> tuple[int, str]:
    """(line, message) for one pydantic error of ``model``'s validation of ``root``.

    A validator may point its error at a field inside its model by putting a dotted path in
    the error context under ``field`` (see ``PydanticCustomError``).
    """
    loc: list[str | int] = list(err["loc"])
    ctx = err.get("ctx") or {}
    if "field" in ctx:
        loc += [int(p) if p.isdigit() else p for p in str(ctx["field"]).split(".")]
    kind, value = err["type"], err.get("input")
    node, tp, owner = root, _unwrap(model), None
    path: list[str | int] = []
    line = root.start_mark.line + 1 if root is not None else 1
    for part in loc:
        if _is_union(tp):
            tags = _tags(tp)
            if part in tags:  # the tag pydantic puts in the location: not a field
                tp = _unwrap(tags[part])
                continue
            tp = _unwrap(_member(tags, node))  # a validator's error from inside a member
        owner = tp
        path.append(part)
        if isinstance(part, int):
            tp = _unwrap(get_args(tp)[0] if get_args(tp) else Any)
        elif _is_model(tp) and part in tp.model_fields:
            tp = _unwrap(tp.model_fields[part].annotation)
        else:
            tp = Any
        at, node = _child(node, part)
        if at is not None:
            line = at.start_mark.line + 1
    where = dotted(path)
    if kind == "extra_forbidden":
        allowed = sorted(owner.model_fields) if owner is not None and _is_model(owner) else []
        near = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return line, f"{where}: unknown field; {hint}allowed: {', '.join(allowed)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        name = str(ctx.get("discriminator", "kind")).strip("'")
        got = f" (got {ctx['tag']!r})" if "tag" in ctx else ""
        return line, f"{where}.{name}: must be one of {', '.join(_tags(tp))}{got}"
    if kind in ("enum", "literal_error"):
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return line, f"{where}: must be one of {choices} (got {value!r})"
    if kind == "missing":
        return line, f"{where}: is required"
    msg = str(err["msg"]).removeprefix("Value error, ")
    msg = re.sub(r"^Input should be a valid dictionary.*", "must be a mapping of fields", msg)
    msg = re.sub(r"^Input should be", "must be", msg)
    scalar = isinstance(value, str | int | float | bool | None)
    shown = scalar and kind != "config_rule" and repr(value) not in msg
    return line, f"{where}: {msg}" + (f" (got {value!r})" if shown else "")


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional; list[X] and set[X] stay."""
    while True:
        if hasattr(tp, "__metadata__"):  # Annotated[X, ...]
            tp = tp.__origin__
        elif _is_union(tp) and len(args := [a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = args[0]
        else:
            return tp


def _tags(union: Any) -> dict[str, type[BaseModel]]:
    """Discriminator value -> member, for a discriminated union of models: each member's
    single-value ``Literal`` fields name it."""
    out: dict[str, type[BaseModel]] = {}
    for member in get_args(union):
        if _is_model(member):
            for f in member.model_fields.values():
                args = get_args(f.annotation)
                if get_origin(f.annotation) is Literal and len(args) == 1:
                    out[str(args[0])] = member
    return out


def _member(tags: dict[str, type[BaseModel]], node: yaml.Node | None) -> Any:
    """The union member the YAML mapping ``node`` says it is (by its tag value)."""
    if isinstance(node, yaml.MappingNode):
        for _, v in node.value:
            if isinstance(v, yaml.ScalarNode) and v.value in tags:
                return tags[v.value]
    return Any


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node | None, yaml.Node | None]:
    """Under ``node`` at ``part``: the node to take the line from (a key, or a list item) and
    the node to descend into (the value); Nones when the YAML does not have it."""
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for k, v in node.value:
            if k.value == part:
                return k, v
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part], node.value[part]
    return None, None
