from handler.engine.text import StopMatcher


def _run(stops, pieces):
    matcher, out = StopMatcher(stops), []
    for piece in pieces:
        text, hit = matcher.push(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_no_stops_passes_through():
    assert _run([], ["a", "b"]) == ("ab", False)


def test_stop_inside_one_piece():
    assert _run(["END"], ["abcENDdef"]) == ("abc", True)


def test_stop_split_across_pieces_is_held_back():
    matcher = StopMatcher(["END"])
    assert matcher.push("abcE") == ("abc", False)
    assert matcher.push("N") == ("", False)
    assert matcher.push("D!") == ("", True)


def test_false_alarm_is_released():
    assert _run(["END"], ["abE", "Nx", "y"]) == ("abENxy", False)


def test_earliest_of_several_stops_wins():
    assert _run(["two", "one"], ["zero one two"]) == ("zero ", True)
