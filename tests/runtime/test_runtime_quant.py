"""paradis_tf.quant against a NumPy reference of the same arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from paradis_tf.errors import ParaDiSError
from paradis_tf.quant import (
    FLOAT32,
    QTensor,
    QuantError,
    QuantParams,
    convert,
    dequantize,
    quantize,
    requantize,
)


def test_quantize_rounds_half_away_from_zero_and_clips():
    p = QuantParams("int8", 0.5, 3)
    x = np.array([0.25, -0.25, 0.75, -0.75, 1000.0, -1000.0, 0.0], np.float32)
    # x/scale = 0.5, -0.5, 1.5, -1.5 -> 1, -1, 2, -2 (half away), then + 3, clipped to [-128, 127]
    np.testing.assert_array_equal(quantize(x, p), np.array([4, 2, 5, 1, 127, -128, 3], np.int8))
    assert quantize(x, p).dtype == np.int8


def test_dequantize_inverts_quantize_within_half_a_step():
    rng = np.random.default_rng(0)
    p = QuantParams("int8", 0.02, -7)
    x = rng.uniform(-2.4, 2.6, 1000).astype(np.float32)
    err = np.abs(dequantize(quantize(x, p), p) - x)
    assert err.max() <= p.scale / 2 + 1e-6


def test_requantize_matches_float_reference():
    rng = np.random.default_rng(1)
    src, dst = QuantParams("int8", 0.031, 5), QuantParams("int8", 0.047, -20)
    q = rng.integers(-128, 128, 5000).astype(np.int8)
    ref = np.clip(np.sign(v := (q.astype(np.float64) - 5) * 0.031 / 0.047) * np.floor(np.abs(v) + 0.5) - 20, -128, 127)
    np.testing.assert_array_equal(requantize(q, src, dst), ref.astype(np.int8))
    # same parameters: the very same array comes back
    assert requantize(q, src, src) is q


def test_convert_covers_quantize_dequantize_requantize_and_identity():
    p8 = QuantParams("int8", 0.1, 0)
    t = QTensor.from_float(np.array([[0.12, -0.36]], np.float32))
    q = convert(t, p8)
    np.testing.assert_array_equal(q.data, [[1, -4]])
    np.testing.assert_allclose(convert(q, FLOAT32).data, [[0.1, -0.4]], rtol=1e-6)
    assert convert(q, p8) is q
    np.testing.assert_array_equal(convert(q, QuantParams("int8", 0.2, 10)).data, [[11, 8]])


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"dtype": "int8", "scale": 0.0}, "scale=0.0"),
        ({"dtype": "int8", "scale": float("nan")}, "scale=nan"),
        ({"dtype": "int8", "scale": 0.1, "zero_point": 200}, "zero_point=200"),
        ({"dtype": "int4", "scale": 0.1}, "dtype='int4'"),
    ],
)
def test_bad_params_are_refused_naming_the_value(kwargs, text):
    with pytest.raises(QuantError, match=text) as e:
        QuantParams(**kwargs)
    assert isinstance(e.value, ParaDiSError)


def test_qtensor_refuses_data_of_another_dtype():
    with pytest.raises(QuantError, match="float32"):
        QTensor(np.zeros(3, np.float32), QuantParams("int8", 0.1, 0))
