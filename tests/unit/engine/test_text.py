from handler.engine.text import StopMatcher


def _run(stops, pieces):
    matcher, out = StopMatcher(stops), []
    for piece in pieces:
        text, hit = matcher.push(piece)
        out.append(text)
        if hit is not None:
            return "".join(out), hit
    return "".join(out) + matcher.flush(), None


def test_no_stops_passes_through():
    assert _run([], ["a", "b"]) == ("ab", None)


def test_stop_inside_one_piece():
    assert _run(["END"], ["abcENDdef"]) == ("abc", "END")


def test_stop_split_across_pieces_is_held_back():
    matcher = StopMatcher(["END"])
    assert matcher.push("abcE") == ("abc", None)
    assert matcher.push("N") == ("", None)
    assert matcher.push("D!") == ("", "END")


def test_false_alarm_is_released():
    assert _run(["END"], ["abE", "Nx", "y"]) == ("abENxy", None)


def test_earliest_of_several_stops_wins_and_is_named():
    """The stop string reported is the one that ended the text (Anthropic's `stop_sequence`)."""
    assert _run(["two", "one"], ["zero one two"]) == ("zero ", "one")
