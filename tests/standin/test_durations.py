"""keep_alive is read as Ollama reads it: api.Duration in Ollama's api/types.go takes a JSON
number as seconds and a string through Go's time.ParseDuration. The cases below are Go's own
(time_test.go); the module refuses, before calling Ollama, exactly what Go refuses."""

import datetime
import importlib.util
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gpufleet.lab.standins.ollama.config import api_keep_alive, env_keep_alive, go_duration

MODULE_UTILS = Path(__file__).resolve().parents[2] / "plugins/module_utils/ollama_api.py"
spec = importlib.util.spec_from_file_location("ollama_api", MODULE_UTILS)
ollama_api = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ollama_api)

GO_VALID = {
    "0": 0,
    "5s": 5,
    "30s": 30,
    "1478s": 1478,
    "-5s": -5,
    "+5s": 5,
    "-0": 0,
    "+0": 0,
    "5.0s": 5,
    "5.6s": 5.6,
    "5.s": 5,
    ".5s": 0.5,
    "1.004s": 1.004,
    "100.00100s": 100.001,
    "10ns": 10e-9,
    "11us": 11e-6,
    "12\u00b5s": 12e-6,
    "12\u03bcs": 12e-6,
    "13ms": 13e-3,
    "15m": 900,
    "16h": 57600,
    "3h30m": 12600,
    "10.5s4m": 250.5,
    "-2m3.4s": -123.4,
    "1h2m3s4ms5us6ns": 3723.004005006,
    "39h9m14.425s": 140954.425,
}
GO_INVALID = ["", "3", "-1", "-", "s", ".", "-.", ".s", "+.s", "1d", "1h30", "5 minutes"]


@pytest.mark.parametrize(("text", "seconds"), GO_VALID.items())
def test_go_durations_are_read_as_go_reads_them(text, seconds):
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", GO_INVALID)
def test_what_go_refuses_is_refused_with_gos_message(text):
    with pytest.raises(ValueError, match=r"^time: (invalid duration|missing unit in|unknown unit)"):
        go_duration(text)


@pytest.mark.parametrize("text", [*GO_VALID, *GO_INVALID])
def test_the_module_sends_only_what_ollama_accepts(text):
    if text.lstrip("+-").isdigit():
        assert ollama_api.keep_alive_value(text) == int(text)
        return
    if text in GO_VALID:
        assert ollama_api.keep_alive_value(text) == text
    else:
        with pytest.raises(ollama_api.OllamaError, match="keep_alive"):
            ollama_api.keep_alive_value(text)


def test_numbers_are_whole_seconds_and_negative_means_for_ever():
    assert api_keep_alive(300) == 300
    assert api_keep_alive(2.9) == 2
    assert api_keep_alive(-1) is None
    assert api_keep_alive("-1m") is None


@pytest.mark.parametrize(
    ("value", "message"), [(True, "Unsupported type: 'bool'"), ([1], "Unsupported type: '[]")]
)
def test_other_json_types_are_unsupported(value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        api_keep_alive(value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("-1", None), ("10", 10), ("1h", 3600), ("soon", 300), ("", 300)]
)
def test_the_environment_takes_seconds_as_well(text, seconds):
    """envconfig.KeepAlive tries ParseDuration, then whole seconds, then keeps 5 minutes."""
    assert env_keep_alive(text) == seconds


def generate(standin, keep_alive):
    body = {"model": "llama3.1:8b", "prompt": "", "keep_alive": keep_alive}
    request = urllib.request.Request(
        standin.url + "/api/generate", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_the_server_refuses_a_unitless_string_as_ollama_does(standin):
    urllib.request.urlopen(
        urllib.request.Request(
            standin.url + "/api/pull",
            data=json.dumps({"model": "llama3.1:8b", "stream": False}).encode(),
        ),
        timeout=60,
    ).read()
    assert generate(standin, "-1") == (400, {"error": 'time: missing unit in duration "-1"'})
    assert generate(standin, True) == (400, {"error": "Unsupported type: 'bool'"})
    status, answer = generate(standin, -1)
    assert status == 200 and answer["done_reason"] == "load"
    with urllib.request.urlopen(standin.url + "/api/ps", timeout=10) as response:
        (loaded,) = json.load(response)["models"]
    assert loaded["expires_at"] > "2100"
    status, _answer = generate(standin, "90m")
    with urllib.request.urlopen(standin.url + "/api/ps", timeout=10) as response:
        (loaded,) = json.load(response)["models"]
    remaining = datetime.datetime.fromisoformat(loaded["expires_at"]).timestamp() - time.time()
    assert status == 200 and 5300 < remaining <= 5400
