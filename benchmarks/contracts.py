"""Cost of contract validation per instance: the compiled validator against plain jsonschema.

Run: ``.venv/bin/python benchmarks/contracts.py``. Writes the ``contracts`` section of
RESULTS.md. The gateway validates every request instance and every prediction, so the
figure that matters is the valid-instance cost next to the gateway's cost per request.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section  # benchmarks is not a package

from backout.proof.contracts import compile_validator

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {f: {"type": "number", "minimum": 0, "maximum": 100} for f in FEATURES},
    "required": FEATURES,
    "additionalProperties": False,
}
ROW = dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True))
BAD = {**ROW, "sepal_width": "wide"}


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Best of five runs, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    compiled = compile_validator(SCHEMA)
    plain = jsonschema.Draft202012Validator(SCHEMA)
    rows = [
        (
            f"compile_validator ({compiled.engine}), valid row",
            per_call_us(lambda: compiled(ROW), 50_000),
        ),
        (
            "jsonschema Draft202012Validator.is_valid, valid row",
            per_call_us(lambda: plain.is_valid(ROW), 20_000),
        ),
        (
            "compile_validator, invalid row (lists violations)",
            per_call_us(lambda: compiled(BAD), 5_000),
        ),
    ]
    body = "| validator, iris-like instance | µs per instance |\n| --- | ---: |\n"
    body += "".join(f"| {name} | {us:.2f} |\n" for name, us in rows)
    write_section("contracts", "Contract validation", body)
    print(body)


if __name__ == "__main__":
    main()
