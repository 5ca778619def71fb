"""The curated public surface: everything in ``backout.__all__`` is really there."""

from __future__ import annotations

import subprocess
import sys

import backout


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert set(backout.__all__) - {"__version__"} == set(backout._EXPORTS)


def test_every_exported_name_resolves() -> None:
    for name in backout.__all__:
        assert getattr(backout, name) is not None, name


def test_exports_are_the_objects_of_their_modules() -> None:
    from backout.control.controller import Controller
    from backout.registry.releases import Registry

    assert backout.Controller is Controller
    assert backout.Registry is Registry


def test_unknown_names_raise_attribute_error() -> None:
    try:
        backout.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_importing_backout_loads_no_heavy_dependency() -> None:
    code = "import sys, backout; print(','.join(m for m in ('numpy', 'starlette', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
