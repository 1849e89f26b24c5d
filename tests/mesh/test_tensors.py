"""The one tensor encoding of the mesh wire."""

import numpy as np
import pytest

from paradis_tf.bundle import TensorSpec
from paradis_tf.mesh import tensors
from paradis_tf.mesh._proto import mesh_pb2
from paradis_tf.mesh.errors import TensorError
from paradis_tf.quant import QTensor, QuantParams


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "float32"])
def test_roundtrip_every_dtype(dtype):
    a = (np.arange(2 * 3 * 4).reshape(2, 3, 4) - 7).astype(dtype)
    t = tensors.encode(a, scale=0.5, zero_point=-3)
    assert list(t.shape) == [2, 3, 4] and t.scale == 0.5 and t.zero_point == -3
    assert len(t.data) == a.nbytes
    b = tensors.decode(mesh_pb2.Tensor.FromString(t.SerializeToString()), dtype=dtype, shape=(2, 3, 4))
    assert b.dtype == a.dtype and np.array_equal(a, b)


def test_little_endian_on_the_wire():
    t = tensors.encode(np.array([1], dtype=np.int32))
    assert t.data == b"\x01\x00\x00\x00"


def test_errors_name_the_problem():
    t = tensors.encode(np.zeros((1, 4), np.int8))
    with pytest.raises(TensorError, match="expected dtype float32, received int8"):
        tensors.decode(t, what="input", dtype="float32")
    with pytest.raises(TensorError, match=r"expected shape \[1, 5\], received \[1, 4\]"):
        tensors.decode(t, shape=(1, 5))
    t.data = b"\x00" * 3
    with pytest.raises(TensorError, match="byte length 3 does not match shape"):
        tensors.decode(t)
    with pytest.raises(TensorError, match="dtype unspecified is not allowed"):
        tensors.decode(mesh_pb2.Tensor(shape=[1]))
    with pytest.raises(TensorError, match="Cannot send dtype float64"):
        tensors.encode(np.zeros(2))


def test_qtensor_keeps_the_senders_quantization():
    spec = TensorSpec((1, 2, 2, 3), QuantParams("int8", 0.1, 4))
    q = QTensor(np.ones((5, 2, 2, 3), np.int8), QuantParams("int8", 0.2, -1))
    back = tensors.decode_qtensor(tensors.encode_qtensor(q), spec, what="feature map")
    assert back.params == q.params and back.shape == (5, 2, 2, 3)  # any batch
    with pytest.raises(TensorError, match="expected a batch of 1"):
        tensors.decode_qtensor(tensors.encode_qtensor(q), spec, batch=1)
    with pytest.raises(TensorError, match=r"expected shape \(N, 2, 2, 3\)"):
        tensors.decode_qtensor(tensors.encode(np.ones((1, 2, 3), np.int8), 0.1, 0), spec)
    with pytest.raises(TensorError, match="scale"):
        tensors.decode_qtensor(tensors.encode(np.ones((1, 2, 2, 3), np.int8), 0.0, 0), spec)


def test_a_shape_whose_element_count_overflows_int64_is_refused_by_its_byte_length():
    # 2**32 * 2**32 elements wrap to 0 in int64: an empty payload must not pass as that shape
    t = mesh_pb2.Tensor(dtype=tensors.encode(np.zeros(1, np.int8)).dtype, shape=[2**32, 2**32], data=b"")
    with pytest.raises(TensorError, match=r"byte length 0 does not match shape \[4294967296, 4294967296\]"):
        tensors.decode(t, what="input")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused_naming_the_tensor(bad):
    a = np.zeros((1, 3), np.float32)
    a[0, 1] = bad
    with pytest.raises(TensorError, match="input: float32 values must be finite"):
        tensors.decode(tensors.encode(a), what="input")
