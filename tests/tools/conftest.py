"""Fixtures of the tool tests."""

import pytest


@pytest.fixture(scope="module")
def bench(tool, request):
    """The script of ``tools/`` that the test module names in ``TOOL``, loaded as a module."""
    return tool(request.module.TOOL)


@pytest.fixture(scope="session")
def tiny_bundle(tool, tmp_path_factory):
    """The sync-layer bundle of tests/mesh (plans 1x1.0, 2x0.5, seq-2), built once by tools/fuzz_mesh.py's recipe."""
    out = tmp_path_factory.mktemp("bundle") / "tinysync"
    tool("fuzz_mesh").build_bundle(out)
    return out
