"""The stand-in's OpenAI-compatible API, seen through the official `openai` Python client as
users' code calls Ollama (base_url .../v1/, any api_key), and as plain HTTP for the wire."""

import json
import urllib.request

import ollama
import openai
import pytest
from test_contract import http


def openai_client(standin) -> openai.OpenAI:
    return openai.OpenAI(base_url=standin.url + "/v1/", api_key="ollama", max_retries=0)


@pytest.fixture
def served(standin):
    """The stand-in with a chat model and an embedding model pulled."""
    api = ollama.Client(host=standin.url)
    api.pull("llama3.1:8b")
    api.pull("nomic-embed-text")
    return standin


def test_chat_completion_streams_chunks_and_ends_with_done(served):
    stream = openai_client(served).chat.completions.create(
        model="llama3.1:8b",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices]
    assert all(c.object == "chat.completion.chunk" and c.model == "llama3.1:8b" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert "".join(c.choices[0].delta.content or "" for c in content).strip()
    assert [c.choices[0].finish_reason for c in content] == [None] * 12 + ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_the_stream_on_the_wire_is_server_sent_events_ending_with_done(served):
    body = json.dumps(
        {"model": "llama3.1:8b", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    request = urllib.request.Request(served.url + "/v1/chat/completions", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = [line for line in response.read().decode().split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["delta"]["role"] == (
        "assistant"
    )


def test_chat_and_text_completions_answered_whole(served):
    client = openai_client(served)
    chat = client.chat.completions.create(
        model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert chat.object == "chat.completion" and chat.choices[0].finish_reason == "stop"
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    assert chat.usage.completion_tokens == 5 and chat.usage.total_tokens == 6
    text = client.completions.create(model="llama3.1:8b", prompt="Once upon", max_tokens=4)
    assert text.object == "text_completion" and text.choices[0].text
    streamed = list(
        client.completions.create(model="llama3.1:8b", prompt="hi", max_tokens=3, stream=True)
    )
    assert [c.choices[0].finish_reason for c in streamed] == [None, None, None, "stop"]


def test_embeddings_one_per_input_in_order(served):
    client = openai_client(served)
    result = client.embeddings.create(model="nomic-embed-text", input=["sky", "grass"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 32 for d in result.data)
    single = client.embeddings.create(model="nomic-embed-text", input="sky")
    assert single.data[0].embedding == result.data[0].embedding


def test_models_list_and_retrieve(served):
    client = openai_client(served)
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {"llama3.1:8b", "nomic-embed-text:latest"}
    assert listed["llama3.1:8b"].owned_by == "library"
    assert client.models.retrieve("llama3.1:8b").id == "llama3.1:8b"


def test_errors_are_openai_error_objects(served):
    client = openai_client(served)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="nope:1b", messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body == {
        "message": "model 'nope:1b' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope:1b")
    status, _headers, body = http(served, "POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_copy_and_the_older_embeddings_endpoint(served):
    api = ollama.Client(host=served.url)
    api.copy("llama3.1:8b", "my-llama:prod")
    listed = {m.model for m in api.list().models}
    assert listed == {"llama3.1:8b", "my-llama:prod", "nomic-embed-text:latest"}
    assert api.show("my-llama:prod").details.family == "llama"
    with pytest.raises(ollama.ResponseError) as missing:
        api.copy("nope:1b", "other:1b")
    assert missing.value.status_code == 404
    assert len(api.embeddings(model="nomic-embed-text", prompt="sky").embedding) == 32
