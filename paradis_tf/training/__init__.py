"""Joint training of all switches (in-place distillation) and baselines, for classifiers and super-resolution.

The loss lives in `ParaDiSModel.compute_loss`, so Keras' own `train_step`
runs it: `tf.distribute` strategies, loss scaling and metrics keep working.
"""

from paradis_tf.training.baselines import SLIMMABLE_SWITCHES, individual_model, slimmable_model
from paradis_tf.training.recipe import TrainConfig, device_accuracy, evaluate, make_optimizer, train
from paradis_tf.training.sr import SRTrainConfig, evaluate_sr, train_sr, upscale_image

__all__ = ["TrainConfig", "train", "evaluate", "device_accuracy", "make_optimizer", "individual_model", "slimmable_model",
           "SLIMMABLE_SWITCHES", "SRTrainConfig", "train_sr", "evaluate_sr", "upscale_image"]
