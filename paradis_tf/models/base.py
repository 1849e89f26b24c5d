"""`ParaDiSModel`: one set of shared weights, one Keras model per switch."""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
from keras import ops

from paradis_tf.data.pipeline import DEFAULT_PREPROCESSING
from paradis_tf.errors import InputError, SwitchError
from paradis_tf.layers.tensorflow_ops import is_dataset, random_permutation
from paradis_tf.models.body import BODY_OPTIONS
from paradis_tf.models.interpret import DeviceOps, PackedOps, ParaDiSOps, count_macs
from paradis_tf.switches import Switch, parse_switches
from paradis_tf.training.distillation import (TEACHERS, check_label_smoothing, check_sandwich, check_teacher_of,
                                              check_temperature, teacher_indices, widest_index)

# Architecture bodies register here by name (see `register_architecture`).
ARCHITECTURES: dict[str, type] = {}

def build_model(architecture: str, input_shape, num_classes: int, switches, arch_config: dict,
                options: dict) -> "ParaDiSModel":
    """A `ParaDiSModel` of a registered architecture, for the builders.

    ``options`` are the builder's other keyword arguments: the `Body` ones
    (`BODY_OPTIONS`, defaults filled in) join ``arch_config``, the rest go
    to `ParaDiSModel` (labels, label_mix, sandwich, switch_weights, teacher,
    preprocessing, name...).
    """
    options = dict(options)
    arch = {**arch_config, **{k: options.pop(k, default) for k, default in BODY_OPTIONS.items()}}
    return ParaDiSModel(architecture, switches, input_shape, num_classes, arch_config=arch, **options)


def register_architecture(name: str):
    def deco(cls):
        ARCHITECTURES[name] = cls
        return keras.saving.register_keras_serializable(package="paradis_tf")(cls)

    return deco


@keras.saving.register_keras_serializable(package="paradis_tf")
class ParaDiSModel(keras.Model):
    """A ParaDiS network: shared full-width weights serving several switches.

    Calling the model runs every switch (or a sandwich sample of them during
    training) and returns the list of their logits in `switches` order.
    Training with `fit` uses in-place distillation: the widest switch learns
    from the labels, every other switch from a teacher switch's detached
    predictions (``label_mix`` of the label loss mixed in), one optimizer
    step per batch; at the end of `fit` every switch's BN statistics are
    re-estimated on a sample of the training data (`calibrate`).

    Build instances with `paradis_tf.models.mobilenet_v1` or
    `paradis_tf.models.resnet`.

    Args:
        architecture: registered architecture name (``"mobilenet_v1"``...).
        switches: switch texts or `Switch` objects.
        input_shape: (H, W, C) of one image.
        num_classes: number of classes.
        arch_config: keyword arguments of the architecture body.
        preprocessing: ``{"scale", "offset"}``: float input is
            ``raw * scale + offset``; recorded for the converter.
        labels: optional class names.
        label_mix: weight of the label loss for the non-widest switches
            (0 = pure distillation).
        sandwich: ``None`` to train every switch at every step, or the number
            of switches per step (widest + narrowest + random others).
        switch_weights: optional ``{switch text: weight}`` multiplying that
            switch's loss term (default 1 for every switch), e.g. to give the
            narrowest switch more say over the weights it shares.
        teacher: whom the non-widest switches distil from. ``"widest"``:
            the widest switch (in-place distillation). ``"nested"``: the
            cheapest other switch that contains them (`Switch.contains`),
            a teacher assistant between them and the widest switch (Ozerov
            and Duong, "Inplace knowledge distillation with teacher
            assistant", arXiv 2105.08369): with the six benchmark switches,
            2x0.5 learns from 1x1.0, 0.5+0.25+0.25 from 2x0.5, 4x0.25 and
            1x0.5 from 0.5+0.25+0.25, 1x0.25 from 1x0.5. A switch no other
            contains learns from the widest. `teachers` lists the choice.
        teacher_of: optional ``{student switch: teacher switch}`` overriding
            ``teacher`` for some switches, e.g. ``{"1x0.25": "1x1.0"}`` with
            ``teacher="nested"``.
        temperature: distillation temperature T (Hinton et al., "Distilling
            the knowledge in a neural network"): the distillation term is
            ``T**2 * CE(softmax(teacher / T), softmax(student / T))``, so a
            T above 1 passes on more of the teacher's ranking of the wrong
            classes; the ``T**2`` keeps its gradients on the scale of the
            label term. 1 (the default) is plain in-place distillation.
        label_smoothing: epsilon of label smoothing (Szegedy et al.,
            "Rethinking the Inception architecture"): every label term (the
            widest switch's loss, and the ``label_mix`` part of the others')
            targets ``1 - epsilon`` on the true class plus ``epsilon / K``
            spread over all K classes. The distillation targets are the
            teacher's predictions, unchanged. 0 (the default): hard labels.
    """

    def __init__(
        self,
        architecture: str,
        switches: Sequence,
        input_shape: Sequence[int],
        num_classes: int,
        arch_config: dict | None = None,
        preprocessing: dict | None = None,
        labels: Sequence[str] | None = None,
        label_mix: float = 0.0,
        sandwich: int | None = None,
        switch_weights: dict | None = None,
        teacher: str = "widest",
        teacher_of: dict | None = None,
        temperature: float = 1.0,
        label_smoothing: float = 0.0,
        **kwargs,
    ):
        kwargs.setdefault("name", architecture)
        super().__init__(**kwargs)
        if architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}.")
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise InputError(f"Expected input_shape (height, width, channels). Received input_shape={input_shape}.")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"Expected num_classes >= 2. Received num_classes={num_classes!r}.")
        if not 0.0 <= float(label_mix) <= 1.0:
            raise ValueError(f"Expected 0 <= label_mix <= 1. Received label_mix={label_mix!r}.")
        if teacher not in TEACHERS:
            raise ValueError(f"Expected teacher to be one of {list(TEACHERS)}. Received teacher={teacher!r}.")
        temp = check_temperature(temperature)
        smoothing = check_label_smoothing(label_smoothing)
        parsed = parse_switches(switches)
        sandwich = check_sandwich(sandwich, len(parsed))
        self.architecture = architecture
        self._switches = parsed
        self.image_shape = input_shape
        self.num_classes = num_classes
        self.arch_config = dict(arch_config or {})
        self.preprocessing = dict(preprocessing or DEFAULT_PREPROCESSING)
        self.labels = list(labels) if labels is not None else None
        self.label_mix = float(label_mix)
        self.sandwich = sandwich
        self.switch_weights = _check_switch_weights(switch_weights, parsed)
        self.teacher = teacher
        self.teacher_of = check_teacher_of(teacher_of, parsed)
        self.temperature = temp
        self.label_smoothing = smoothing
        teacher_indices(parsed, teacher, self.teacher_of)  # refuses loops now, not at the first step
        self.body = ARCHITECTURES[architecture](
            switches=[str(s) for s in parsed],
            input_shape=input_shape,
            num_classes=num_classes,
            name="body",
            **self.arch_config,
        )
        self._acc = self._switch_metrics(parsed)
        # Derived Keras models are caches, kept out of Keras' tracking so that
        # they are not saved as sub-layers.
        object.__setattr__(self, "_switch_model_cache", {})
        self.build((None, *input_shape))

    def _switch_metrics(self, switches) -> list:
        """The metrics `compute_metrics` updates, one per switch: top-1 accuracy."""
        return [keras.metrics.SparseCategoricalAccuracy(name=f"acc_{s}") for s in switches]

    # -- structure ----------------------------------------------------------
    def build(self, input_shape=None):
        self.body.build_full()
        self.built = True

    @property
    def switches(self) -> tuple[Switch, ...]:
        return self._switches

    @property
    def widest_index(self) -> int:
        """Index of the teacher switch: largest total width, fewest devices."""
        return widest_index(self._switches)

    @property
    def teachers(self) -> list[int | None]:
        """Index of the switch each switch distils from (None: the labels)."""
        return teacher_indices(self._switches, self.teacher, self.teacher_of)

    @property
    def narrowest_index(self) -> int:
        return min(range(len(self._switches)), key=lambda i: (self._switches[i].total_width, len(self._switches[i])))

    @property
    def has_sync(self) -> bool:
        return bool(self.body.sync_layer_names())

    @property
    def fusion_bias(self) -> np.ndarray:
        """Bias added once after summing the devices' partial logits."""
        return np.asarray(self.body.head.bias, dtype=np.float32)

    def _switch(self, switch) -> Switch:
        s = Switch.parse(switch)
        if s not in self._switches:
            raise SwitchError(
                f"Switch '{s}' is not one of this model's switches {[str(x) for x in self._switches]}; "
                "pick one of those or train a model with it."
            )
        return s

    # -- forward ------------------------------------------------------------
    def forward(self, switch, x, training=None, per_device: bool = False):
        """Logits of one switch (tensors in, tensor out).

        Runs packed (`PackedOps`: one kernel per layer for all devices);
        ``per_device=True`` runs the reference path instead, one kernel per
        device and layer (`ParaDiSOps`). Both compute the same function.
        """
        s = self._switch(switch)
        interpreter = ParaDiSOps if per_device else PackedOps
        return self.body.forward(interpreter(s, training), x)

    def _check_input(self, x):
        shape = tuple(x.shape[1:])
        if len(shape) != 3 or any(a is not None and a != b for a, b in zip(shape, self.image_shape)):
            raise InputError(
                f"Expected input of shape (batch, {', '.join(map(str, self.image_shape))}). "
                f"Received shape {tuple(x.shape)}."
            )
        if not keras.backend.standardize_dtype(x.dtype).startswith(("float", "bfloat")):
            raise InputError(
                f"Expected float input (raw * {self.preprocessing['scale']:g} + {self.preprocessing['offset']:g}). "
                f"Received dtype {x.dtype}; preprocess it first (paradis_tf.data.preprocess)."
            )

    def call(self, inputs, training=None):
        self._check_input(inputs)
        if not training or self.sandwich is None or self.sandwich >= len(self._switches):
            return [self.forward(s, inputs, training) for s in self._switches]
        w, n = self.widest_index, self.narrowest_index
        others = [i for i in range(len(self._switches)) if i not in (w, n)]
        k = self.sandwich - (1 if w == n else 2)
        chosen = random_permutation(len(others))[:k]
        outs = []
        for i, s in enumerate(self._switches):
            if i in (w, n):
                outs.append(self.forward(s, inputs, training))
                continue
            active = ops.any(ops.equal(chosen, others.index(i)))
            outs.append(
                ops.cond(
                    active,
                    lambda s=s: self.forward(s, inputs, training),
                    lambda: self._skipped_output(inputs),
                )
            )
        return outs

    def _skipped_output(self, inputs):
        """What a switch the sandwich sample skips outputs this step: NaN logits, which the loss and the
        metrics leave out."""
        return ops.full((ops.shape(inputs)[0], self.num_classes), np.nan, dtype="float32")

    # -- training -----------------------------------------------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = list(y_pred)
        w = self.widest_index
        y = ops.cast(y, "int32")
        weight = [self.switch_weights.get(str(s), 1.0) for s in self._switches]
        # Keras' loss objects average over the batch and divide by the number
        # of `tf.distribute` replicas (whose gradients are summed); every term
        # below is a multiple of one of them, so the total is scaled right.
        distill_loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        if self.label_smoothing > 0.0:
            target = ops.one_hot(ops.reshape(y, (-1,)), self.num_classes)
            smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.label_smoothing)

            def label_loss(z):
                return smoothed(target, z)
        else:
            sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            def label_loss(z):
                return sparse(y, z)
        total = weight[w] * label_loss(logits[w])
        temp = self.temperature
        soft = {w: ops.stop_gradient(ops.softmax(logits[w] / temp, axis=-1))}
        teachers = self.teachers
        for i, student in enumerate(logits):
            t = teachers[i]
            if t is None:
                continue
            if t not in soft:
                # A teacher the sandwich sample skipped (NaN logits): the
                # widest switch, which always runs, teaches instead.
                soft[t] = ops.where(ops.isnan(logits[t]), soft[w],
                                    ops.stop_gradient(ops.softmax(logits[t] / temp, axis=-1)))
            kd = distill_loss(soft[t], student / temp)
            if temp != 1.0:
                kd = kd * (temp * temp)
            term = kd
            if self.label_mix > 0.0:
                ce = label_loss(student)
                term = (1.0 - self.label_mix) * kd + self.label_mix * ce
            # Switches skipped by the sandwich sample carry NaN logits.
            total = total + ops.where(ops.isnan(term), 0.0, weight[i] * term)
        if self.losses:
            total = total + self._aggregate_additional_loss(self.losses)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for acc, logits in zip(self._acc, y_pred):
            # A switch the sandwich sample skipped this step has NaN logits:
            # it does not count.
            skipped = ops.any(ops.isnan(logits), axis=-1)
            acc.update_state(y, ops.where(ops.isnan(logits), 0.0, logits),
                             sample_weight=ops.cast(ops.logical_not(skipped), "float32"))
        return self.get_metrics_result()

    def fit(self, x=None, y=None, *args, calibrate: bool = True, calibration_steps: int = 20, **kwargs):
        """`keras.Model.fit`, then BN calibration of every switch.

        Args:
            calibrate: re-estimate every switch's BN statistics on a sample
                of the training data at the end (on by default: without it
                the narrow switches' moving statistics are useless).
            calibration_steps: batches used for calibration.
        """
        history = super().fit(x, y, *args, **kwargs)
        if calibrate:
            self.calibrate(x, steps=calibration_steps, batch_size=kwargs.get("batch_size") or 128)
        return history

    def calibrate(self, x, steps: int = 20, batch_size: int = 128, switches: Iterable | None = None) -> None:
        """Re-estimates the BN statistics of every switch from data.

        Args:
            x: float images (NumPy array or tensor), or a `tf.data.Dataset`
                yielding images or (images, labels) batches.
            steps: maximum number of batches.
            batch_size: batch size when ``x`` is an array.
            switches: subset of switches (default: all).
        """
        if is_dataset(x):
            batches = []
            for item in x.take(steps):
                batches.append(item[0] if isinstance(item, (tuple, list)) else item)
        else:
            arr = np.asarray(x)
            self._check_input(arr)
            batches = [arr[i : i + batch_size] for i in range(0, min(len(arr), steps * batch_size), batch_size)]
        if not batches:
            raise InputError("Calibration needs at least one batch of images. Received an empty input.")
        bns = self.body.bn_layers()
        chosen = [self._switch(s) for s in switches] if switches is not None else list(self._switches)
        # Eager on purpose: the cumulative-average weight of each batch is a
        # Python value read by the BN layers at call time.
        try:
            for s in chosen:
                for step, batch in enumerate(batches):
                    for bn in bns:
                        bn._calibration_step = float(step)
                    self.forward(s, ops.convert_to_tensor(batch, "float32"), training=True)
        finally:
            for bn in bns:
                bn._calibration_step = None

    # -- derived models -----------------------------------------------------
    def switch_model(self, switch) -> keras.Model:
        """A Keras model computing one switch's fused logits (shared weights)."""
        s = self._switch(switch)
        if str(s) not in self._switch_model_cache:
            model = SwitchModel(self, str(s))
            model.build((None, *self.image_shape))
            self._switch_model_cache[str(s)] = model
        return self._switch_model_cache[str(s)]

    def device_segments(self, switch) -> list[list[keras.Model]]:
        """Plain Keras models of every device's segments (sliced weights).

        Segment 0 takes the image; segment ``j > 0`` takes the list of the
        outputs of segment ``j - 1`` of all devices, in device order (the
        all-gather before a sync layer). The last segment outputs partial
        logits without bias: ``logits = sum(partials) + fusion_bias``.
        """
        s = self._switch(switch)
        out = []
        for k in range(len(s)):
            dops = DeviceOps(s, k, self.image_shape)
            v = self.body.forward(dops, dops.start())
            out.append(dops.finish(v))
        return out

    def device_models(self, switch) -> list[keras.Model]:
        """One plain Keras model per device: image in, partial logits out.

        ``sum(m(x) for m in device_models(s)) + fusion_bias == switch_model(s)(x)``.

        Raises:
            ValueError: the model has sync layers (use `device_segments`).
        """
        if self.has_sync:
            raise ValueError(
                f"Model has sync layers {self.body.sync_layer_names()}, so a device cannot run alone; "
                "use device_segments(switch)."
            )
        return [segs[0] for segs in self.device_segments(switch)]

    def device_stats(self, switch) -> list[dict]:
        """MACs and parameters of every device of a switch."""
        return [
            {"macs": sum(count_macs(m) for m in segs), "params": int(sum(m.count_params() for m in segs))}
            for segs in self.device_segments(switch)
        ]

    def sequential_models(self, num_devices: int) -> list[keras.Model]:
        """The 1x1.0 network cut into consecutive pieces with balanced MACs.

        The sequential baseline of Coral pipelining, DEFER or Neurosurgeon:
        piece 0 takes the image, piece ``i`` takes piece ``i-1``'s output,
        the last piece outputs the full logits (bias included).
        """
        full = Switch.parse("1x1.0")
        self._switch(full)
        n_stages = self.body.num_stages()
        if not 1 <= num_devices <= n_stages:
            raise ValueError(f"Expected 1 <= num_devices <= {n_stages} (stages). Received num_devices={num_devices}.")
        ops_ = DeviceOps(full, 0, self.image_shape, sequential_cuts=range(1, n_stages))
        per_stage = [count_macs(m) for m in ops_.finish(self.body.forward(ops_, ops_.start()))]
        cuts = _balanced_cuts(per_stage, num_devices)
        ops_ = DeviceOps(full, 0, self.image_shape, sequential_cuts=cuts)
        return ops_.finish(self.body.forward(ops_, ops_.start()))

    # -- serialization ------------------------------------------------------
    def get_config(self):
        return {
            "architecture": self.architecture,
            "switches": [str(s) for s in self._switches],
            "input_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "arch_config": self.arch_config,
            "preprocessing": self.preprocessing,
            "labels": self.labels,
            "label_mix": self.label_mix,
            "sandwich": self.sandwich,
            "switch_weights": self.switch_weights or None,
            "teacher": self.teacher,
            "teacher_of": self.teacher_of or None,
            "temperature": self.temperature,
            "label_smoothing": self.label_smoothing,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _check_switch_weights(weights, switches) -> dict[str, float]:
    """``{canonical switch text: weight}``; unknown switches and weights <= 0 are refused."""
    if not weights:
        return {}
    known = {str(s) for s in switches}
    out = {}
    for key, value in dict(weights).items():
        text = str(Switch.parse(key))  # Switch.parse passes a Switch through
        if text not in known:
            raise ValueError(f"switch_weights names switch {key!r}, which the model does not have; its switches: {sorted(known)}.")
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not v > 0 or v == float("inf"):
            raise ValueError(f"Expected a finite weight > 0 for switch {text!r} in switch_weights. Received {value!r}.")
        out[text] = v
    return out


class SwitchModel(keras.Model):
    """One switch of a `ParaDiSModel`, sharing its weights.

    A subclassed model rather than a functional one: the ParaDiS layers
    return a different number of per-device tensors under each switch, and
    Keras' functional graph assumes a layer's output structure never
    changes between calls.
    """

    def __init__(self, parent: ParaDiSModel, switch: str, **kwargs):
        super().__init__(name=f"switch_{switch.replace('.', '_').replace('+', 'p')}", **kwargs)
        self.parent = parent
        self.switch = switch

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, training=None):
        self.parent._check_input(inputs)
        return self.parent.forward(self.switch, inputs, training)


def _balanced_cuts(costs: list[int], parts: int) -> list[int]:
    """Stage indices to cut before so the largest part's cost is minimal."""
    n = len(costs)
    prefix = np.concatenate([[0], np.cumsum(costs)])
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    arg = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for p in range(1, parts + 1):
        for i in range(p, n + 1):
            for j in range(p - 1, i):
                c = max(best[p - 1][j], prefix[i] - prefix[j])
                if c < best[p][i]:
                    best[p][i], arg[p][i] = c, j
    cuts, i = [], n
    for p in range(parts, 0, -1):
        j = arg[p][i]
        if j > 0:
            cuts.append(j)
        i = j
    return sorted(cuts)
