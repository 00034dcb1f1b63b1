import json
import logging

from handler.logs import JsonFormatter, TextFormatter


def _record(message, **extra):
    record = logging.LogRecord("handler.requests", logging.INFO, "", 0, message, None, None)
    record.__dict__.update(extra)
    return record


def test_text_lines_cannot_be_forged_with_control_characters():
    line = TextFormatter("%(levelname)s %(message)s").format(
        _record("request", path="/v1/models\nINFO request path=/admin status=200", method="GET\r"))
    assert "\n" not in line and "\r" not in line
    assert line == "INFO request path=/v1/models\\x0aINFO request path=/admin status=200 method=GET\\x0d"


def test_json_lines_stay_one_line():
    line = JsonFormatter().format(_record("request", path="/a\nb"))
    assert "\n" not in line and json.loads(line)["path"] == "/a\nb"
