"""Test configuration: fixtures live in fix_*.py, split by concern."""

from __future__ import annotations

import pytest

pytest_plugins = ["fix_pg", "fix_db", "fix_capture", "fix_api", "fix_kafka"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False, help="run the long soak/chaos versions")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long version; run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
