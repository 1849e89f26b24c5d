"""Who distils from whom, and the checks of the distillation settings (pure Python, no Keras)."""

import sys

import pytest

from paradis_tf.switches import parse_switches
from paradis_tf.training.distillation import (check_label_smoothing, check_sandwich, check_temperature,
                                              teacher_indices)


def test_teacher_indices_without_keras():
    six = parse_switches(["1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", "1x0.5", "1x0.25"])
    assert teacher_indices(six) == [None, 0, 0, 0, 0, 0]
    assert teacher_indices(six, "nested") == [None, 0, 1, 2, 2, 4]
    # 3x0.25 lies in 2x0.5, the cheaper container; the widest need not come first
    assert teacher_indices(parse_switches(["2x0.5", "1x1.0", "3x0.25"]), "nested") == [1, None, 0]
    # nothing contains 1x0.5 (it straddles two 4x0.25 blocks): the widest teaches it;
    # 1x0.25 lies in both others at equal cost: the one with fewer devices
    assert teacher_indices(parse_switches(["4x0.25", "1x0.5", "1x0.25"]), "nested") == [None, 0, 1]
    with pytest.raises(ValueError, match=r"teacher to be one of \['widest', 'nested'\]. Received teacher='chain'"):
        teacher_indices(six, "chain")


def test_teacher_of_overrides_the_rule_for_named_switches_and_refuses_what_cannot_teach():
    six = parse_switches(["1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", "1x0.5", "1x0.25"])
    assert teacher_indices(six, "nested", {"1x0.25": "1x1.0"}) == [None, 0, 1, 2, 2, 0]
    assert teacher_indices(six, "widest", {"4x0.25": "0.5+0.25+0.25"}) == [None, 0, 0, 2, 0, 0]
    assert teacher_indices(six, "nested", {}) == teacher_indices(six, "nested")
    with pytest.raises(ValueError, match="widest switch '1x1.0' a teacher"):
        teacher_indices(six, "nested", {"1x1.0": "2x0.5"})
    with pytest.raises(ValueError, match="'1x0.5' its own teacher"):
        teacher_indices(six, "nested", {"1x0.5": "1x0.5"})
    with pytest.raises(ValueError, match=r"teacher switch '2x0.25', which the model does not have"):
        teacher_indices(six, "nested", {"1x0.5": "2x0.25"})
    with pytest.raises(ValueError, match=r"student switch '3x0.25'"):
        teacher_indices(six, "nested", {"3x0.25": "1x1.0"})
    with pytest.raises(ValueError, match=r"teachers of '2x0.5' loop \(2x0.5 <- 4x0.25 <- 2x0.5\)"):
        teacher_indices(six, "widest", {"2x0.5": "4x0.25", "4x0.25": "2x0.5"})


def test_setting_checks_return_the_value_or_name_what_is_wrong():
    assert check_sandwich(None, 6) is None and check_sandwich(3, 6) == 3
    with pytest.raises(ValueError, match=r"between 2 and the number of switches \(6\), or None. Received sandwich=7"):
        check_sandwich(7, 6)
    assert check_temperature(3) == 3.0
    for bad in (0, float("inf"), True, "warm"):
        with pytest.raises(ValueError, match="Received temperature="):
            check_temperature(bad)
    assert check_label_smoothing(0.1) == 0.1
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="Received label_smoothing="):
            check_label_smoothing(bad)


def test_the_checks_import_without_keras():
    import subprocess

    code = ("import sys, paradis_tf.training.distillation; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
