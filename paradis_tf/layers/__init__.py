"""Keras 3 layers that implement ParaDiS switches (the Keras side of docs/ARCHITECTURE.md).

Every layer holds one set of full-width weights and takes the switch as a
plain Python call argument; activations travel as lists of per-device
tensors, so device ``k``'s computation never reads another device's slice
except where a layer says so (stem input broadcast, sync convolution).
"""

from paradis_tf.layers.batchnorm import SwitchableBatchNormalization
from paradis_tf.layers.conv import ParaDiSConv2D, ParaDiSDepthwiseConv2D
from paradis_tf.layers.dense import ParaDiSDense
from paradis_tf.layers.fused_conv import ParaDiSFusedConv2D

__all__ = ["ParaDiSConv2D", "ParaDiSDepthwiseConv2D", "SwitchableBatchNormalization", "ParaDiSDense", "ParaDiSFusedConv2D"]
