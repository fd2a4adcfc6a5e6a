"""Shared fixtures for the Python tests: a seeded generator per test (SAMPLEATTN_TEST_SEED overrides the
seed; it is printed on failure)."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest


def _seed(nodeid: str) -> int:
    base = int(os.environ.get("SAMPLEATTN_TEST_SEED", "20261129"))
    return base ^ zlib.crc32(nodeid.encode())


@pytest.fixture
def rng(request):
    seed = _seed(request.node.nodeid)
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        for key, value in item.user_properties:
            if key == "seed":
                item.add_report_section("call", "seed", f"rng seed {value} (SAMPLEATTN_TEST_SEED base)")
