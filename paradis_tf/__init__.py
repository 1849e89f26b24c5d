"""paradis_tf: train one ParaDiS network, run it spread over edge devices.

The top-level package imports without TensorFlow, so the node daemon, the
serial bridge and the runtime install and run on small boards. Import
`paradis_tf.models`, `paradis_tf.layers` or `paradis_tf.training` for the
Keras parts.
"""

from paradis_tf.errors import ParaDiSError
from paradis_tf.switches import Switch, parse_switches

__version__ = "0.1.0"

__all__ = ["ParaDiSError", "Switch", "parse_switches", "__version__"]
