import pytest

from paradis_tf.errors import ChannelSplitError, SwitchError
from paradis_tf.switches import BENCHMARK_SWITCHES, Switch, channel_divisor, parse_switches


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


@pytest.mark.parametrize("text", ["1x1.0", "2x0.5", "0.5+0.25+0.25", "4x0.25", " 0.5 + 0.5 "])
def test_the_constructor_takes_switch_text_as_parse_does(text):
    s = Switch(text)
    assert s == Switch.parse(text) and s.widths == Switch.parse(text).widths
    assert isinstance(s.widths, tuple) and all(isinstance(w, float) for w in s.widths)
    assert Switch(str(s)) == s and eval(repr(s)) == s  # repr is a constructor call
    assert Switch(s) == s and Switch([0.5, 0.25, 0.25]) == Switch("0.5+0.25+0.25")
    assert hash(Switch(text)) == hash(Switch.parse(text))


@pytest.mark.parametrize("bad", ["abc", "3x0.5", "0.5+0.75", ""])
def test_the_constructor_refuses_bad_text_as_parse_does(bad):
    with pytest.raises(ValueError) as e:
        Switch(bad)
    assert isinstance(e.value, SwitchError)
    assert repr(bad) in str(e.value) and "allowed" in str(e.value)
    with pytest.raises(SwitchError, match="Expected device widths or switch text. Received widths=0.5"):
        Switch(0.5)


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
