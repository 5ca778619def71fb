"""The world of the controller scenarios, on each database (see ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.control.world import POLICY, NewWorld, World, make_world


@pytest.fixture
def new_world(tmp_path: Path, new_store_url: Callable[[], str]) -> Iterator[NewWorld]:
    """Builds worlds under a policy (the scenarios' ``POLICY`` unless given), each with its
    own new store on this test's database; their stores are disposed of afterwards."""
    worlds: list[World] = []

    def make(policy_text: str = POLICY) -> World:
        folder = tmp_path / f"world-{len(worlds)}"
        folder.mkdir()
        worlds.append(make_world(folder, policy_text, url=new_store_url()))
        return worlds[-1]

    yield make
    for w in worlds:
        w.store.dispose()


@pytest.fixture
def world(new_world: NewWorld) -> World:
    """A store with iris@1.0.0 live and known-good, 1.1.0 and 1.2.0 registered, a fake clock."""
    return new_world()
