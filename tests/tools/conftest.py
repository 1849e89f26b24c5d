"""Fixtures of the tool tests."""

import pytest


@pytest.fixture(scope="module")
def bench(tool, request):
    """The script of ``tools/`` that the test module names in ``TOOL``, loaded as a module."""
    return tool(request.module.TOOL)
