"""The Keras side's TensorFlow-only operations, in one place.

Everything else in `paradis_tf.layers` and `paradis_tf.models` is written
with `keras.ops`; these have no `keras.ops` counterpart that is as fast or
that fits, and each says why. (Training itself runs on the TensorFlow
backend: its input pipeline is `tf.data`, and `tf.distribute` strategies
run `ParaDiSModel.fit`.)
"""

from __future__ import annotations

import tensorflow as tf


def fused_batch_norm(x, gamma, beta, mean=None, variance=None, epsilon: float = 1e-3, training: bool = False):
    """Batch normalization of an NHWC tensor on TensorFlow's fused kernel.

    Why TensorFlow's kernel: `keras.ops` has no fused batch norm, and the
    composite ops (`ops.moments`, then `ops.batch_normalization`) made the
    six-switch training step about 1.8x slower (302 ms fused against 544 ms
    at width 0.5 on 2 CPU cores).

    Args:
        x: NHWC float tensor.
        gamma, beta: per-channel scale and offset.
        mean, variance: per-channel statistics to normalize with when not
            ``training``.
        epsilon: added to the variance.
        training: normalize with the batch's own statistics.

    Returns:
        ``(y, batch_mean, batch_variance)``; when not ``training`` the last
        two are whatever the kernel returns and are not meant for use.
    """
    if training:
        return tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon, is_training=True)
    return tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean, variance, epsilon=epsilon, is_training=False)


def random_permutation(n: int):
    """A random permutation of ``0 .. n-1`` (int32), drawn anew at every run of a traced step.

    Why TensorFlow's op: `keras.random.shuffle` draws from a seed generator,
    which would add a state variable to the model (and to every saved model,
    so files saved without it no longer load).
    """
    return tf.random.shuffle(tf.range(n))


def is_dataset(x) -> bool:
    """Whether ``x`` is a `tf.data.Dataset`, the kit's input pipeline (`paradis_tf.data.make_dataset`)."""
    return isinstance(x, tf.data.Dataset)
