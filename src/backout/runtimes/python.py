"""Python runtime: a model written as plain Python, shipped as a ``.py`` artifact.

``runtime.options["entrypoint"] = "module:attr"``. ``module`` names a ``.py`` artifact of
the release (``scoring`` → ``scoring.py``, ``pkg.scoring`` → ``pkg/scoring.py``); ``attr`` is

* a function ``f(inputs) -> outputs``, or
* a class with ``predict(inputs) -> outputs``, instantiated once at load. Its constructor
  may take ``config`` (the release's config dict) and ``artifacts`` (artifact path → local
  file, for weights shipped alongside the code), by those names.

``inputs`` is a mapping of names to numpy arrays; ``outputs`` a mapping of names to arrays
(or one array, which becomes the first output name). ``predict`` may be ``async``. The names
come from ``runtime.options`` (``inputs``, ``outputs``, ``feature_names``, ``classes``) or
else from attributes of the same names on the class or module; the defaults are ``input``
and ``prediction``.

Loading a Python artifact runs it, so — as with pickles — only bytes whose digest has just
verified are executed. Each load gets its own module object under a unique name, so two
releases of one model never share module state.
"""

from __future__ import annotations

import inspect
import itertools
import linecache
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from backout.errors import ModelError, ValidationError
from backout.runtimes.base import LoadContext, deep_sizeof

_counter = itertools.count()

ModelFn = Callable[[Mapping[str, np.ndarray]], Any]


class PythonPredictor:
    """A Python function or object called in-process, on the caller's thread."""

    def __init__(
        self,
        ref: str,
        module: types.ModuleType,
        target: Any,
        fn: ModelFn,
        is_async: bool,
        names: Mapping[str, list[str] | None],
        source_bytes: int,
    ) -> None:
        self.ref = ref
        self.module = module
        self._target = target
        self._fn = fn
        self._async = is_async
        self.input_names: list[str] = names["inputs"] or ["input"]
        self.output_names: list[str] = names["outputs"] or ["prediction"]
        self.feature_names = names["feature_names"]
        self.classes = names["classes"]
        self._source_bytes = source_bytes

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            result = self._fn(inputs)
            if self._async:
                result = await result
        except ValidationError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.ref} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, Mapping):
            return {str(k): np.asarray(v) for k, v in result.items()}
        return {self.output_names[0]: np.asarray(result)}

    def memory_bytes(self) -> int:
        # The instance's own data (weights it loaded) plus the module's source and globals.
        state = {k: v for k, v in vars(self.module).items() if not k.startswith("__")}
        return self._source_bytes + deep_sizeof((self._target, state))

    async def aclose(self) -> None:
        name = self.module.__name__
        sys.modules.pop(name, None)
        linecache.cache.pop(self.module.__file__ or "", None)


def _names(ctx: LoadContext, sources: list[Any], key: str) -> list[str] | None:
    # runtime.options first (a release can override what the code declares), then the
    # class instance, the class and the module.
    for src in sources:
        value = ctx.options.get(key) if src is None else getattr(src, key, None)
        if isinstance(value, list | tuple) and all(isinstance(v, str | int) for v in value):
            return [str(v) for v in value]
        if src is None and value is not None:
            raise ctx.fail(f"runtime.options.{key} is {value!r}", "give a list of strings")
    return None


def load(ctx: LoadContext) -> PythonPredictor:
    """Execute the entrypoint's module from its verified artifact and bind the model."""
    entry = ctx.option_str("entrypoint")
    mod_name, sep, attr = entry.partition(":")
    if not sep or not mod_name or not attr:
        raise ctx.fail(
            f"runtime.options.entrypoint is {entry!r}",
            "write it as module:attr, e.g. scoring:predict for a function in scoring.py",
        )
    file = mod_name.replace(".", "/") + ".py"
    if file not in ctx.files:
        py = sorted(p for p in ctx.files if p.endswith(".py"))
        raise ctx.fail(
            f"entrypoint {entry!r} needs the artifact {file!r}, which the release lacks",
            f"ship {file} as an artifact or name one of {py}",
        )
    source = ctx.read_verified(file)
    # A name no other load uses: two releases (or two loads) of one model get two modules.
    unique = f"backout_release_{ctx.manifest.model}_{next(_counter)}_{mod_name.replace('.', '_')}"
    filename = f"<{ctx.ref}>/{file}"
    module = types.ModuleType(unique)
    module.__file__ = filename
    text = source.decode("utf-8")
    # Tracebacks from the model then show its source lines, not just line numbers.
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    sys.modules[unique] = module  # dataclasses and pickle look the module up by name
    try:
        code = compile(text, filename, "exec")
        exec(code, module.__dict__)
    except Exception as exc:
        sys.modules.pop(unique, None)
        linecache.cache.pop(filename, None)
        raise ctx.fail(
            f"running {file!r} raised {type(exc).__name__}: {exc}",
            "fix the module so that importing it succeeds",
        ) from exc
    try:
        return _bind(ctx, module, attr, entry, file, len(source))
    except BaseException:
        # A failed load leaves nothing behind in sys.modules.
        sys.modules.pop(unique, None)
        linecache.cache.pop(filename, None)
        raise


def _bind(
    ctx: LoadContext, module: types.ModuleType, attr: str, entry: str, file: str, size: int
) -> PythonPredictor:
    target: Any = getattr(module, attr, None)
    if target is None:
        public = sorted(k for k, v in vars(module).items() if not k.startswith("_") and callable(v))
        raise ctx.fail(
            f"{file!r} has no attribute {attr!r} (entrypoint {entry!r})",
            f"name one of its functions or classes: {public}",
        )
    owner: Any = module
    if inspect.isclass(target):
        owner = target
        target = _instantiate(ctx, target)
        fn = getattr(target, "predict", None)
        if not callable(fn):
            raise ctx.fail(
                f"class {attr!r} in {file!r} has no predict method",
                "give it predict(self, inputs) returning a dict of arrays",
            )
    elif callable(target):
        fn = target
    else:
        raise ctx.fail(
            f"{entry!r} is a {type(target).__name__}, not a function or class",
            "point the entrypoint at a function f(inputs) or a class with predict",
        )
    sources: list[Any] = [None, target, owner, module]
    names = {k: _names(ctx, sources, k) for k in ("inputs", "outputs", "feature_names", "classes")}
    is_async = inspect.iscoroutinefunction(fn)
    return PythonPredictor(ctx.ref, module, target, fn, is_async, names, size)


def _instantiate(ctx: LoadContext, cls: type[Any]) -> Any:
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "config" in params:
        kwargs["config"] = dict(ctx.manifest.config)
    if "artifacts" in params:
        kwargs["artifacts"] = dict(ctx.files)
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise ctx.fail(
            f"{cls.__name__}({', '.join(kwargs)}) raised {type(exc).__name__}: {exc}",
            "make the constructor succeed with only config and artifacts",
        ) from exc
