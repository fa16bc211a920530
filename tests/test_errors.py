"""One exception root: every exception gamecast defines descends from GamecastError, through
the root of its own package, so a caller tells our refusals from foreign failures at once."""

from __future__ import annotations

import importlib
import inspect

import pytest

from contracts.errors import ContractError, GamecastError
from tests.test_layering import modules

PACKAGE_ROOTS = {
    "contracts": "contracts.errors.ContractError",
    "indexer": "indexer.errors.IndexerError",
    "builds": "builds.errors.BuildError",
    "judge": "judge.errors.JudgeError",
    "signaling": "signaling.errors.SignalingError",
    "streamer": "streamer.errors.StreamerError",
    "verifier": "verifier.errors.VerifierError",
    "testbed": "testbed.errors.TestbedError",
    "benchmarks": "benchmarks.errors.BenchmarkError",
}


def defined_exceptions() -> list[type[BaseException]]:
    found = []
    for name, _ in modules():
        if name.endswith("__main__"):
            continue  # running it is what importing it does
        module = importlib.import_module(name)
        found += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == name
        ]
    return found


def root_of(package: str) -> type[GamecastError]:
    module, _, name = PACKAGE_ROOTS[package].rpartition(".")
    root: type[GamecastError] = getattr(importlib.import_module(module), name)
    return root


@pytest.mark.parametrize("cls", defined_exceptions(), ids=lambda cls: cls.__qualname__)
def test_every_exception_descends_from_its_packages_root(cls: type[BaseException]) -> None:
    package = cls.__module__.split(".", maxsplit=1)[0]
    if cls is GamecastError:
        return
    assert package in PACKAGE_ROOTS, f"{cls.__module__}.{cls.__qualname__} has no package root"
    assert issubclass(cls, root_of(package)), f"{cls.__qualname__} is not a {root_of(package)}"


def test_a_contract_breach_is_still_a_value_error_for_callers_that_catch_one() -> None:
    assert issubclass(ContractError, ValueError)
    assert issubclass(ContractError, GamecastError)
