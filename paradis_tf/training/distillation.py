"""In-place distillation settings of a ParaDiS network, checked.

Who learns from whom (`teacher_indices`: the widest switch learns from the
labels, every other switch from a teacher switch's predictions), and the
checks of the loss settings `ParaDiSModel` takes: the sandwich sample size,
the distillation temperature, label smoothing, per-switch teachers.

Pure Python and NumPy-free: the command line offers these choices and the
benchmarks check their options without loading Keras or TensorFlow.
"""

from __future__ import annotations

from typing import Sequence

from paradis_tf.switches import Switch

__all__ = ["TEACHERS", "widest_index", "teacher_indices", "check_sandwich", "check_temperature",
           "check_label_smoothing", "check_teacher_of"]

# Whom the distilled switches of a ParaDiS network learn from
# (`ParaDiSModel(teacher=...)`).
TEACHERS = ("widest", "nested")


def widest_index(switches: Sequence[Switch]) -> int:
    """Index of the switch that learns from the labels: largest total width, fewest devices."""
    return max(range(len(switches)), key=lambda i: (switches[i].total_width, -len(switches[i])))


def teacher_indices(switches: Sequence[Switch], teacher: str = "widest",
                    teacher_of: "dict[str, str] | None" = None) -> list[int | None]:
    """Index of the switch each switch distils from (None: the labels).

    Args:
        switches: the network's switches.
        teacher: ``"widest"``: every switch learns from the widest one.
            ``"nested"``: from the cheapest other switch that contains it
            (`Switch.contains`, then `Switch.cost`), or the widest if none
            does.
        teacher_of: ``{student: teacher}`` switch texts overriding the rule
            for some switches (`check_teacher_of`).
    """
    if teacher not in TEACHERS:
        raise ValueError(f"Expected teacher to be one of {list(TEACHERS)}. Received teacher={teacher!r}.")
    overrides = check_teacher_of(teacher_of, switches)
    texts = [str(s) for s in switches]
    w = widest_index(switches)
    out: list[int | None] = []
    for i, s in enumerate(switches):
        if i == w:
            out.append(None)
            continue
        if texts[i] in overrides:
            out.append(texts.index(overrides[texts[i]]))
            continue
        containers = [j for j, t in enumerate(switches) if j != i and t.contains(s)] if teacher == "nested" else []
        out.append(min(containers, key=lambda j: (switches[j].cost, len(switches[j]), j)) if containers else w)
    for i in range(len(switches)):  # every chain of teachers must end at the widest switch
        j, seen = i, []
        while out[j] is not None:
            seen.append(texts[j])
            j = out[j]
            if texts[j] in seen:
                raise ValueError(f"teacher_of={overrides} makes the teachers of {texts[i]!r} loop "
                                 f"({' <- '.join(seen + [texts[j]])}), so it never reaches the widest switch "
                                 f"{texts[w]!r}; let one of them learn from a switch outside the loop.")
    return out


def check_sandwich(sandwich, n_switches: int) -> int | None:
    """The sandwich sample size as an int, or None (every switch every
    step); a `ValueError` naming the value unless 2 <= sandwich <= n_switches."""
    if sandwich is not None and not 2 <= int(sandwich) <= n_switches:
        raise ValueError(
            f"Expected sandwich between 2 and the number of switches ({n_switches}), or None. "
            f"Received sandwich={sandwich!r}."
        )
    return None if sandwich is None else int(sandwich)


def check_temperature(temperature) -> float:
    """The distillation temperature as a float: finite and > 0 (1: plain
    in-place distillation); anything else (a bool, text, 0, inf, NaN) is a
    `ValueError` naming the value."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(temperature, bool) or not 0.0 < value < float("inf"):
        raise ValueError(f"Expected a finite distillation temperature > 0 (1: plain distillation). "
                         f"Received temperature={temperature!r}.")
    return value


def check_label_smoothing(label_smoothing) -> float:
    """The label-smoothing epsilon as a float in [0, 1) (0: hard labels);
    anything else (a bool, text, a negative value, 1 or more, NaN) is a
    `ValueError` naming the value."""
    try:
        value = float(label_smoothing)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(label_smoothing, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"Expected a label smoothing 0 <= epsilon < 1 (0: hard labels; 0.1 is the usual value). "
                         f"Received label_smoothing={label_smoothing!r}.")
    return value


def check_teacher_of(teacher_of: "dict | None", switches: Sequence[Switch]) -> dict[str, str]:
    """``{student: teacher}`` in canonical switch texts, checked.

    Both must be switches of the network; the widest switch learns from the
    labels, so it cannot be a student; a switch cannot teach itself.

    Raises:
        ValueError: naming the entry and the allowed switches.
    """
    if not teacher_of:
        return {}
    texts = [str(s) for s in switches]
    widest = texts[widest_index(switches)]
    out = {}
    for student, teacher in dict(teacher_of).items():
        a, b = str(Switch.parse(student)), str(Switch.parse(teacher))
        for role, text in (("student", a), ("teacher", b)):
            if text not in texts:
                raise ValueError(f"teacher_of names {role} switch {text!r}, which the model does not have; "
                                 f"its switches: {texts}.")
        if a == widest:
            raise ValueError(f"teacher_of gives the widest switch {a!r} a teacher; it learns from the labels. "
                             "Name another student.")
        if a == b:
            raise ValueError(f"teacher_of makes switch {a!r} its own teacher; name another switch.")
        out[a] = b
    return out
