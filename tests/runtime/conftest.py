"""Bundles converted from hand-made tiny models (fixtures for runtime tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_paradis import TinyParaDiS, images  # noqa: E402


@pytest.fixture(scope="session")
def tiny_images() -> np.ndarray:
    return images(48)


@pytest.fixture(scope="session")
def tiny_model() -> TinyParaDiS:
    return TinyParaDiS(switches=("1x1.0", "2x0.5", "0.5+0.25+0.25"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_model, tiny_images):
    from paradis_tf.convert import convert_model

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return convert_model(
        tiny_model, out, tiny_images, calib_samples=32, sequential=(2, 3), float_variant=True, num_threads=1
    )


@pytest.fixture(scope="session")
def sync_model() -> TinyParaDiS:
    return TinyParaDiS(switches=("2x0.5", "4x0.25"), sync=True, seed=3)


@pytest.fixture(scope="session")
def sync_bundle(tmp_path_factory, sync_model, tiny_images):
    from paradis_tf.convert import convert_model

    out = tmp_path_factory.mktemp("bundles") / "sync"
    return convert_model(sync_model, out, tiny_images, calib_samples=32, sequential=(), float_variant=True, num_threads=1)
