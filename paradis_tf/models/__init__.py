"""ParaDiS model builders (the Keras side of docs/ARCHITECTURE.md)."""

from paradis_tf.models.base import ParaDiSModel
from paradis_tf.models.mobilenet import MobileNetV1Body, mobilenet_v1
from paradis_tf.models.resnet import ResNetBody, resnet
from paradis_tf.models.sr import ParaDiSSRModel
from paradis_tf.models.wdsr import WDSRBody, wdsr

__all__ = ["ParaDiSModel", "mobilenet_v1", "resnet", "MobileNetV1Body", "ResNetBody", "ParaDiSSRModel", "wdsr",
           "WDSRBody"]
