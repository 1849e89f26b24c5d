import pytest

from paradis_tf.errors import ChannelSplitError, SwitchError
from paradis_tf.switches import BENCHMARK_SWITCHES, Switch, channel_divisor, parse_switches, teacher_indices


@pytest.mark.parametrize("text,widths", [
    ("1x1.0", (1.0,)), ("2x0.5", (0.5, 0.5)), ("4x0.25", (0.25,) * 4),
    ("0.5+0.25+0.25", (0.5, 0.25, 0.25)), ("1x0.5", (0.5,)), ("3x0.25", (0.25,) * 3),
])
def test_parse_widths_len_and_round_trip(text, widths):
    s = Switch.parse(text)
    assert s.widths == widths
    assert len(s) == len(widths)
    assert str(s) == text
    assert Switch.parse(str(s)) == s


def test_benchmark_switches_are_canonical_texts_and_paradis_trains_default():
    # tools compare and store these texts, so each must be the text its switch prints
    assert [str(s) for s in parse_switches(BENCHMARK_SWITCHES)] == list(BENCHMARK_SWITCHES)
    from paradis_tf.cli.cmd_train import DEFAULT_SWITCHES

    assert DEFAULT_SWITCHES.split(",") == list(BENCHMARK_SWITCHES)


def test_equal_widths_print_in_repeat_form():
    assert str(Switch.parse("0.5+0.5")) == "2x0.5"


@pytest.mark.parametrize("bad", ["", "abc", "2x", "x0.5", "0x0.5", "3x0.5", "0.5+0.75", "0.5+-0.25", "2x0", "1x1.0,"])
def test_bad_text_is_quoted_with_what_is_allowed(bad):
    with pytest.raises(SwitchError) as e:
        Switch.parse(bad)
    assert repr(bad) in str(e.value) or "widths" in str(e.value)
    assert "allowed" in str(e.value)


def test_non_positive_or_oversize_widths_rejected():
    with pytest.raises(SwitchError, match="positive"):
        Switch((0.5, 0.0))
    with pytest.raises(SwitchError, match="at most 1.0"):
        Switch((0.75, 0.5))


def test_channel_ranges_follow_design_formula():
    s = Switch.parse("0.5+0.25+0.25")
    assert s.channel_ranges(16) == [(0, 8), (8, 12), (12, 16)]
    assert Switch.parse("1x0.5").channel_ranges(16) == [(0, 8)]
    assert Switch.parse("4x0.25").used_channels(32) == 32


def test_channel_split_error_names_layer_and_switch():
    with pytest.raises(ChannelSplitError) as e:
        Switch.parse("4x0.25").channel_ranges(6, "block3_pw")
    assert "block3_pw" in str(e.value) and "4x0.25" in str(e.value)


def test_parse_switches_rejects_duplicates_and_divisor():
    with pytest.raises(SwitchError, match="twice"):
        parse_switches(["2x0.5", "0.5+0.5"])
    assert channel_divisor(parse_switches("1x1.0,2x0.5,0.5+0.25+0.25,4x0.25")) == 4
    assert channel_divisor(parse_switches("1x1.0,2x0.5")) == 2


@pytest.mark.parametrize("outer, inner, expected", [
    ("1x1.0", "4x0.25", True), ("1x1.0", "0.5+0.25+0.25", True), ("2x0.5", "4x0.25", True),
    ("2x0.5", "1x0.5", True), ("0.5+0.25+0.25", "4x0.25", True), ("0.5+0.25+0.25", "1x0.5", True),
    ("1x0.5", "1x0.25", True), ("4x0.25", "1x0.25", True),
    # a device block of the inner switch straddles two of the outer's
    ("4x0.25", "2x0.5", False), ("4x0.25", "1x0.5", False), ("0.5+0.25+0.25", "2x0.5", False),
    # the inner switch uses channels the outer does not
    ("1x0.5", "2x0.5", False), ("1x0.25", "1x0.5", False),
])
def test_contains_is_block_inclusion(outer, inner, expected):
    assert Switch.parse(outer).contains(inner) is expected


def test_cost_is_sum_of_squared_widths():
    assert Switch.parse("1x1.0").cost == 1.0
    assert Switch.parse("4x0.25").cost == pytest.approx(0.25)
    assert Switch.parse("0.5+0.25+0.25").cost == pytest.approx(0.375)


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
