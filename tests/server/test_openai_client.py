"""omniflux-server driven by the official OpenAI Python client (pinned in scripts/setup.sh), as chat
front-ends and SDKs use it: models, image generations (n=2, streamed), edits with one and two files,
chat with a system message and history, sampled chat with a seed, n=2, stop strings, usage in plain
and streamed answers, finish_reason "length", and each refusal as the client's typed exception with
its status and param; then GET /metrics parsed by prometheus_client. Run by ctest as server.openai_client on the tiny models."""
import base64
import os
import re
import struct
import subprocess
import tempfile
import urllib.request
import zlib

import openai
import prometheus_client.parser
import pytest

BIN = os.environ["OMNIFLUX_BIN_DIR"]
TOKENIZERS = os.environ["OMNIFLUX_TOKENIZERS"]
KEY = "conformance-key"


def png_bytes(w, h, salt=0):
    """A small gradient PNG, written with zlib alone."""
    raw = b"".join(b"\x00" + bytes(((x * 7 + y * 3 + c * 50 + salt) % 256) for x in range(w) for c in range(3))
                   for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def data_uri(png):
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory(prefix="omniflux-openai-") as tmp:
        subprocess.run([os.path.join(BIN, "omniflux-tiny"), "--out", tmp, "--seed", "5", "--only", "flux_1_dev",
                        "--only", "uniworld_v1", "--only", "siglip2", "--only", "x_omni", "--tokenizers", TOKENIZERS],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        log = open(os.path.join(tmp, "server.log"), "w")
        proc = subprocess.Popen(
            [os.path.join(BIN, "omniflux-server"), "--uniworld", os.path.join(tmp, "uniworld-v1"),
             "--flux", os.path.join(tmp, "flux.1-dev"), "--siglip", os.path.join(tmp, "siglip2"),
             "--xomni", os.path.join(tmp, "x-omni"), "--serve-flux", "--threads", "2", "--port", "0", "--api-key", KEY],
            stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            line = proc.stdout.readline()
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            assert m, "server did not start: " + line + open(os.path.join(tmp, "server.log")).read()
            yield m.group(1)
        finally:
            proc.terminate()
            try:
                assert proc.wait(timeout=60) == 0, "the server did not exit cleanly on SIGTERM"
            finally:
                if proc.poll() is None:
                    proc.kill()


@pytest.fixture(scope="module")
def client(server):
    # No retries: a 429 or a dropped connection must show here, not be hidden by the client.
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


def ask(client, model="uniworld-v1", **kw):
    messages = kw.pop("messages", None) or [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": data_uri(png_bytes(32, 32))}}]},
        {"role": "assistant", "content": "A gradient."},
        {"role": "user", "content": "Which colours?"},
    ]
    return client.chat.completions.create(model=model, messages=messages, **kw)


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["uniworld-v1", "x-omni", "flux.1-dev"]
    assert client.models.retrieve("x-omni").id == "x-omni"


def test_generations_n2_and_stream(client):
    r = client.images.generate(model="uniworld-v1", prompt="a red fox", n=2, size="32x32",
                               extra_body={"steps": 1, "seed": 3})
    assert len(r.data) == 2
    images = [base64.b64decode(d.b64_json) for d in r.data]
    assert all(png_size(b) == (32, 32) for b in images)
    assert images[0] != images[1], "n=2 must give two samples (seed, seed + 1)"
    assert r.usage.input_tokens_details.text_tokens > 0 and r.usage.input_tokens_details.image_tokens == 0
    assert r.usage.total_tokens == r.usage.input_tokens == r.usage.input_tokens_details.text_tokens
    # defaults the client may send, and JPEG output
    j = client.images.generate(model="flux.1-dev", prompt="a fox", size="32x32", quality="auto", background="opaque",
                               moderation="auto", output_format="jpeg", output_compression=80, extra_body={"steps": 1})
    assert base64.b64decode(j.data[0].b64_json)[:3] == b"\xff\xd8\xff"
    assert j.output_format == "jpeg"
    # streamed: progress events, then the image
    events = list(client.images.generate(model="uniworld-v1", prompt="a fox", size="32x32", stream=True,
                                         extra_body={"steps": 2}))
    types = [e.type for e in events]
    assert "image_generation.progress" in types
    assert types[-1] == "image_generation.completed"
    assert png_size(base64.b64decode(events[-1].b64_json)) == (32, 32)


def test_edits_with_one_and_two_files(client):
    one = client.images.edit(model="uniworld-v1", prompt="make it snow", size="32x32",
                             image=("a.png", png_bytes(32, 32), "image/png"), extra_body={"steps": 1})
    assert len(one.data) == 1
    assert one.usage.input_tokens_details.image_tokens > 0  # the reference image's VLM tokens
    two = client.images.edit(model="uniworld-v1", prompt="combine them", size="32x32",
                             image=[("a.png", png_bytes(32, 32), "image/png"), ("b.png", png_bytes(48, 32, 9), "image/png")],
                             extra_body={"steps": 1, "snap": False})
    assert png_size(base64.b64decode(two.data[0].b64_json)) == (32, 32)


def test_chat_with_system_and_history(client):
    a = ask(client, max_tokens=16)
    assert a.object == "chat.completion"
    assert a.system_fingerprint.startswith("omniflux-")
    c = a.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    u = a.usage
    assert u.prompt_tokens > 20 and u.completion_tokens >= 1  # the image alone is several tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # no sampling fields: greedy, as the official chat code, so the same answer again
    assert ask(client, max_tokens=16).choices[0].message.content == c.message.content
    # what front-ends send by default is accepted
    d = ask(client, max_tokens=16, temperature=0, top_p=1, presence_penalty=0, frequency_penalty=0, user="u",
            stream=False, n=1, store=False, metadata={"k": "v"})
    assert d.choices[0].message.content == c.message.content


def test_sampled_chat_repeats_with_a_seed_and_n2(client):
    a = ask(client, max_tokens=12, temperature=1.3, seed=11)
    b = ask(client, max_tokens=12, temperature=1.3, seed=11)
    assert a.choices[0].message.content == b.choices[0].message.content
    n2 = ask(client, max_tokens=12, temperature=1.3, seed=11, n=2)
    assert [c.index for c in n2.choices] == [0, 1]
    assert n2.choices[0].message.content == a.choices[0].message.content  # choice 0 uses the seed itself
    texts = {ask(client, max_tokens=12, temperature=1.3, seed=s).choices[0].message.content for s in range(4)}
    assert len(texts) > 1, "four seeds gave one answer"


def test_stop_strings_and_finish_reason_length(client):
    full = ask(client, max_tokens=24)
    text = full.choices[0].message.content
    assert full.usage.completion_tokens > 2, "the tiny model's answer is too short for this test"
    short = ask(client, max_tokens=2)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2
    assert len(text) >= 3, "the tiny model's answer is too short for this test"
    stop = text[1:3]
    cut = ask(client, max_tokens=24, stop=[stop, "never-appears"])
    assert cut.choices[0].message.content == text[:text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_streamed_chat_with_usage(client):
    plain = ask(client, max_tokens=16)
    chunks = list(ask(client, max_tokens=16, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    # without include_usage no chunk has usage
    assert all(c.usage is None for c in ask(client, max_tokens=4, stream=True))


def test_x_omni_chat_text_only_and_with_an_image(client):
    t = ask(client, model="x-omni", max_tokens=8, messages=[{"role": "user", "content": "Name a colour."}])
    assert t.usage.completion_tokens >= 1
    i = ask(client, model="x-omni", max_tokens=8, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(png_bytes(48, 48))}},
                                     {"type": "text", "text": "What is in the picture?"}]}])
    assert i.usage.prompt_tokens > t.usage.prompt_tokens


@pytest.mark.parametrize("kw,param", [
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"n": 9}, "n"),
    ({"temperature": 3}, "temperature"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"extra_body": {"temprature": 0.5}}, "temprature"),
])
def test_refusals_are_typed_400s_naming_the_field(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, max_tokens=4, **kw)
    assert e.value.status_code == 400
    assert e.value.param == param


def test_other_refusals(client):
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, model="gpt-4o", max_tokens=4)
    assert e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, max_tokens=4, messages=[{"role": "user", "content": "hi"},
                                            {"role": "tool", "content": "x", "tool_call_id": "1"}])
    assert e.value.param == "messages[1].role"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model="uniworld-v1", prompt="p", size="32x32", output_format="webp")
    assert e.value.param == "output_format"
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401


def test_metrics_parse_as_prometheus_and_count_the_traffic(server, client):
    # Last in the module: the requests above are in the counters. /metrics is not behind --api-key.
    client.chat.completions.create(model="x-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    text = urllib.request.urlopen(server + "/metrics", timeout=30).read().decode()
    families = {f.name: f for f in prometheus_client.parser.text_string_to_metric_families(text)}
    for name in ["omniflux_requests", "omniflux_request_duration_seconds", "omniflux_queue_wait_seconds",
                 "omniflux_queue_waiting", "omniflux_queue_running", "omniflux_denoising_steps",
                 "omniflux_generated_tokens", "omniflux_images", "omniflux_cancellations", "omniflux_load_seconds",
                 "omniflux_process_resident_memory_bytes"]:
        assert name in families, name
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    ok_chats = value[("omniflux_requests_total", (("endpoint", "/v1/chat/completions"), ("model", "x-omni"),
                                                  ("status", "200")))]
    assert ok_chats >= 2
    assert value[("omniflux_requests_total", (("endpoint", "/v1/models"), ("model", ""), ("status", "401")))] >= 1
    assert value[("omniflux_denoising_steps_total", ())] > 0
    assert value[("omniflux_generated_tokens_total", ())] >= 3
    assert value[("omniflux_images_total", ())] >= 3
    assert value[("omniflux_process_resident_memory_bytes", ())] > 10 * 2**20
    count = value[("omniflux_request_duration_seconds_count", (("endpoint", "/v1/chat/completions"), ("model", "x-omni")))]
    inf = value[("omniflux_request_duration_seconds_bucket", (("endpoint", "/v1/chat/completions"), ("le", "+Inf"),
                                                             ("model", "x-omni")))]
    assert count == inf >= ok_chats
