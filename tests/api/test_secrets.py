"""Issue 16, secrets: the API key is validated when read, and never appears in any output, log,
exception (string, repr, ``body``, ``msg``, ``error``, args, notes, chained causes) or repr; the
store secret never appears in a repr. Each case of the issue is a test named after it."""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._support.api_factories import BASE, instance_json, offer_json
from vastkit._settings import Connection, resolve_connection
from vastkit.api import Client, CreateInstanceRequest
from vastkit.api._redaction import Redactor
from vastkit.clock import ManualClock
from vastkit.config import load_config
from vastkit.errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ResponseDecodingError,
    ResponseTooLargeError,
    ResponseValidationError,
    VastkitError,
)

USER = "/api/v0/users/current"
SEARCH = "/api/v0/bundles/"

# Keys whose repr, JSON and URL spellings all differ from the raw one.
TRICKY_KEYS = [
    "vk-plain-0123456789abcdef0123456789",
    'vk"quote\\back/slash+plus&amp=0123',
    "vk'single%percent?q=1#frag~0123",
    "VK-UPPER-abcdef-0123456789",
]


def spellings(key: str) -> list[str]:
    """Every way a key can be written back by a server or a library."""
    return [
        key,
        repr(key)[1:-1],
        json.dumps(key)[1:-1],
        repr(key.encode())[2:-1],
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote(key, safe="").lower(),
        urllib.parse.quote_plus(key, safe=""),
    ]


def leaks(key: str, text: str) -> list[str]:
    return [form for form in spellings(key) if form in text]


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Everything a user may print of an exception and of its chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield str(item)
        yield repr(item)
        yield repr(item.args)
        yield repr(getattr(item, "__notes__", None))
        for name, value in vars(item).items():
            if name in ("request", "response"):
                continue
            yield f"{name}={value!r}"
        request = getattr(item, "request", None)
        if isinstance(request, httpx.Request):
            yield repr(list(request.headers.items()))
            yield str(request.url)
        response = getattr(item, "response", None)
        if isinstance(response, httpx.Response):
            yield response.text
            yield repr(list(response.headers.items()))
            yield repr(list(response.request.headers.items()))
        pending.extend(x for x in (item.__cause__, item.__context__) if x is not None)


def assert_no_key(key: str, exc: BaseException) -> None:
    for text in exception_texts(exc):
        assert not leaks(key, text), f"key leaked in {text[:300]!r}"


def make_client(key: str, handler: object, **kwargs: object) -> Client:
    http = httpx.Client(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return Client(
        key,
        base_url=BASE,
        http_client=http,
        clock=ManualClock(),
        rng=random.Random(1),
        max_retries=0,
        **kwargs,  # type: ignore[arg-type]
    )


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def xdg_key_file() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "vastai" / "vast_api_key"


# --- the key is validated when read ------------------------------------------------------------


def test_a_key_file_with_a_trailing_crlf_just_works(xdg_key_file: Path) -> None:
    key = "vk-crlf-0123456789abcdef"
    _write(xdg_key_file, f"{key}\r\n".encode())
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"id": 1})

    with make_client(None, handler) as client:  # type: ignore[arg-type]
        assert client.current_user().id == 1
    assert seen == [f"Bearer {key}"]


@pytest.mark.parametrize(
    ("raw", "flaw"),
    [
        (b"vk-inner\nnewline-0123", "line break"),
        (b"vk-inner\r\nnewline-0123\r\n", "line break"),
        (b"vk-control\x07bell-0123", "control character"),
        (b"vk-tab\tinside-0123", "control character"),
        (b"vk-space inside-0123", "space"),
    ],
)
def test_an_inner_newline_or_control_character_in_the_key_file_is_a_config_error_naming_the_file(
    xdg_key_file: Path, raw: bytes, flaw: str
) -> None:
    _write(xdg_key_file, raw)
    requests: list[httpx.Request] = []
    with pytest.raises(ConfigError, match=flaw) as info:
        make_client(None, requests.append)  # type: ignore[arg-type]
    assert info.value.path == str(xdg_key_file)
    assert str(xdg_key_file) in str(info.value)
    assert requests == []  # before any request
    for part in raw.decode().split():
        assert part not in str(info.value)
        assert part not in repr(info.value)
    assert info.value.__cause__ is None


def test_a_non_ascii_key_file_is_a_config_error_not_a_unicode_error(xdg_key_file: Path) -> None:
    secret = "vk-naïve-0123456789"
    for data in (secret.encode("utf-8"), secret.encode("latin-1"), b"vk-\xff\xfe-0123"):
        _write(xdg_key_file, data)
        with pytest.raises(ConfigError, match="non-ASCII") as info:
            resolve_connection()
        assert "naïve" not in str(info.value)
        assert "vk-" not in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__
        assert str(xdg_key_file) in str(info.value)


def test_an_inner_newline_in_vast_api_key_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "vk-first-half\nvk-second-half")
    with pytest.raises(ConfigError, match=r"\$VAST_API_KEY has a line break") as info:
        Client(base_url=BASE)
    assert "first-half" not in str(info.value)
    assert "second-half" not in str(info.value)


def test_a_non_ascii_key_argument_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="the api_key argument has a non-ASCII") as info:
        Client("vk-ключ-0123", base_url=BASE)
    assert "ключ" not in str(info.value)
    assert info.value.key == "api_key"


def test_a_bad_key_from_the_config_files_api_key_env_names_the_variable_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vastkit.yaml").write_text("api_key_env: MY_KEY\n")
    monkeypatch.setenv("MY_KEY", "vk-secret\x1b[31m-0123")
    with pytest.raises(ConfigError) as info:
        load_config().api_key()
    message = str(info.value)
    assert "$MY_KEY" in message
    assert "vastkit.yaml:1" in message
    assert "control character" in message
    assert "vk-secret" not in message


def test_a_bad_key_from_the_config_files_api_key_file_names_that_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    key_file = _write(tmp_path / "prod.key", b"vk-line-one\nvk-line-two\n")
    (tmp_path / "vastkit.yaml").write_text(f"api_key_file: {key_file}\n")
    with pytest.raises(ConfigError, match="line break") as info:
        Client(base_url=BASE)
    assert info.value.path == str(key_file)
    assert "vastkit.yaml:1" in str(info.value)
    assert "line-one" not in str(info.value)


def test_a_key_with_surrounding_whitespace_is_trimmed_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "  vk-env-0123\r\n")
    assert resolve_connection(base_url=BASE) == Connection(api_key="vk-env-0123", base_url=BASE)
    assert resolve_connection(" \tvk-arg-0123\n", BASE).api_key == "vk-arg-0123"


def test_the_illegal_header_value_case_is_never_a_connection_error_or_retried(
    xdg_key_file: Path,
) -> None:
    """Was: ``cannot reach the API ...: Illegal header value b'Bearer <KEY>'`` (exit 6), 3 tries."""
    _write(xdg_key_file, b"vk-abc\ndef-0123\r\n")
    requests: list[httpx.Request] = []
    with pytest.raises(ConfigError) as info:
        make_client(None, requests.append)  # type: ignore[arg-type]
    assert not isinstance(info.value, APIConnectionError)
    assert "Bearer" not in str(info.value)
    assert "abc" not in str(info.value)
    assert requests == []


# --- redaction: every spelling, every field ----------------------------------------------------


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_redactor_replaces_every_spelling(key: str) -> None:
    redactor = Redactor(key)
    for form in spellings(key):
        text = f"before {form} after"
        assert redactor.text(text) == "before [redacted] after"
        assert not leaks(key, redactor.text(text))
        assert redactor.binary(text.encode()) == b"before [redacted] after"
    assert redactor.value({key: [key, {"x": key}]}) == {
        "[redacted]": ["[redacted]", {"x": "[redacted]"}]
    }


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_a_key_echoed_in_a_json_error_field_is_not_in_str_repr_or_body(key: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            json={"success": False, "error": f"bad key {key}", "msg": f"Invalid user key {key}"},
            headers={"X-Echo": urllib.parse.quote(key, safe="")},
        )

    with make_client(key, handler) as client, pytest.raises(AuthenticationError) as info:
        client.current_user()
    assert_no_key(key, info.value)
    assert info.value.body == {
        "success": False,
        "error": "bad key [redacted]",
        "msg": "Invalid user key [redacted]",
    }
    assert info.value.error == "bad key [redacted]"


@pytest.mark.parametrize("key", TRICKY_KEYS)
@pytest.mark.parametrize("spelling", range(7))
def test_exc_body_never_holds_the_key_in_any_spelling(key: str, spelling: int) -> None:
    form = spellings(key)[spelling]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_args", "msg": f"echo {form}"})

    with make_client(key, handler) as client, pytest.raises(BadRequestError) as info:
        client.search_offers("")
    assert_no_key(key, info.value)
    assert info.value.body["msg"] == "echo [redacted]"


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_a_key_spelt_with_json_unicode_escapes_is_redacted_from_the_decoded_body(key: str) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in key)
    raw = b'{"error": "x", "msg": "' + escaped.encode() + b'"}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, content=raw, headers={"content-type": "application/json"})

    with make_client(key, handler) as client, pytest.raises(APIStatusError) as info:
        client.current_user()
    assert_no_key(key, info.value)
    assert info.value.msg == "[redacted]"


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_a_key_in_a_success_body_never_reaches_results_or_validation_errors(key: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == USER:
            return httpx.Response(200, json={"id": 1, "username": key, "api_key": key})
        return httpx.Response(200, json={"offers": [{"id": key}]})

    with make_client(key, handler) as client:
        assert client.current_user().username == "[redacted]"
        with pytest.raises(ResponseValidationError) as info:
            client.search_offers("")
    assert_no_key(key, info.value)


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_connection_errors_and_their_causes_hold_no_key(key: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy refused Bearer {key} ({json.dumps(key)})")

    with make_client(key, handler) as client, pytest.raises(APIConnectionError) as info:
        client.current_user()
    assert_no_key(key, info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_notes_and_args_of_an_error_are_scrubbed() -> None:
    key = TRICKY_KEYS[1]
    error = ValueError(f"has {key}", {"nested": [repr(key)]})
    error.add_note(f"note with {json.dumps(key)}")
    outer = VastkitError(f"outer {key}")
    outer.__cause__ = error
    Redactor(key).exception(outer)
    assert_no_key(key, outer)
    assert outer.args == ("outer [redacted]",)


def test_the_request_attached_to_errors_has_no_key_but_the_sent_one_had_it() -> None:
    key = TRICKY_KEYS[0]
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Authorization"])
        return httpx.Response(500, json={"error": "boom"})

    with make_client(key, handler) as client, pytest.raises(APIStatusError) as info:
        client.current_user()
    assert sent == [f"Bearer {key}"]
    assert info.value.request is not None
    assert info.value.request.headers["Authorization"] == "Bearer [redacted]"
    assert info.value.response.request.headers["Authorization"] == "Bearer [redacted]"


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_the_key_is_never_in_a_log_record(key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    calls = iter([httpx.Response(503, json={"msg": key}), httpx.ConnectError(f"reset {key}")])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(404, text=f"<html><title>{key}</title></html>")
        item = next(calls, httpx.Response(200, json={"id": 1, "email": key}))
        if isinstance(item, Exception):
            raise item
        return item

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with Client(key, base_url=BASE, http_client=http, clock=ManualClock()) as client:
        client.current_user()
        with pytest.raises(VastkitError):
            client.destroy_instance(5)
    assert caplog.records
    for record in caplog.records:
        assert not leaks(key, record.getMessage())
        assert not leaks(key, repr(record.args))


# --- reprs ------------------------------------------------------------------------------------


def test_reprs_of_client_transport_and_settings_never_show_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = TRICKY_KEYS[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAST_API_KEY", key)
    monkeypatch.setenv("STORE_SECRET", "s3-secret-value")
    (tmp_path / "vastkit.yaml").write_text(
        "store_url: s3://bucket/runs\nstorage_options:\n  secret: ${STORE_SECRET}\n"
    )
    settings = load_config()
    assert settings.storage_options == {"secret": "s3-secret-value"}
    with settings.client() as client:
        shown = " ".join([repr(client), repr(client._transport), repr(client._transport._redactor)])
        assert not leaks(key, shown)
    assert "s3-secret-value" not in repr(settings)
    assert "s3-secret-value" not in json.dumps(settings.to_dict())
    assert not leaks(key, repr(resolve_connection()))


def test_repr_of_an_api_instance_hides_vastkit_storage_options() -> None:
    """Was: ``repr()`` of an API instance showed ``VASTKIT_STORAGE_OPTIONS``, the store secret."""
    secret = '{"key": "AKIA-STORE", "secret": "store-secret-value"}'
    env = [["VASTKIT_STORAGE_OPTIONS", secret], ["VASTKIT_RUN_ID", "abc"]]
    onstart = f"export VASTKIT_STORAGE_OPTIONS='{secret}'\npython -m vastkit.worker"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"instances": instance_json(7, extra_env=env, onstart=onstart)}
        )

    with make_client(TRICKY_KEYS[0], handler) as client:
        info = client.get_instance(7)
    assert info is not None
    assert info.env["VASTKIT_STORAGE_OPTIONS"] == secret  # the value is there to use
    shown = repr(info)
    assert "store-secret-value" not in shown
    assert "AKIA-STORE" not in shown
    assert "'VASTKIT_STORAGE_OPTIONS': '***'" in shown
    assert f"onstart='<{len(onstart)} characters>'" in shown


def test_repr_of_a_create_request_hides_env_onstart_and_registry_login() -> None:
    request = CreateInstanceRequest(
        image="img",
        env={"VASTKIT_STORAGE_OPTIONS": "store-secret-value", "-p 8080:8080": "1"},
        onstart="export TOKEN=store-secret-value",
        image_login="-u me -p registry-token ghcr.io",
    )
    shown = repr(request)
    assert "store-secret-value" not in shown
    assert "registry-token" not in shown
    assert "'VASTKIT_STORAGE_OPTIONS': '***'" in shown
    assert "'-p 8080:8080': '***'" in shown


# --- every answer is a vastkit result or a vastkit error -------------------------------------


def test_deeply_nested_json_is_a_vastkit_error_not_a_recursion_error() -> None:
    """Was: deeply nested JSON -> RecursionError."""
    for depth in (65, 3_000, 200_000):
        body = b'{"offers": ' + b"[" * depth + b"]" * depth + b"}"

        def handler(request: httpx.Request, body: bytes = body) -> httpx.Response:
            return httpx.Response(200, content=body)

        with (
            make_client("vk-0123", handler) as client,
            pytest.raises(ResponseTooLargeError) as info,
        ):
            client.search_offers("")
        assert info.value.unit == "levels"
        assert info.value.limit == 64
        assert "nested deeper than 64 levels" in str(info.value)


def test_deep_json_in_an_error_body_is_kept_as_text() -> None:
    body = b"[" * 5_000 + b"]" * 5_000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=body)

    with make_client("vk-0123", handler) as client, pytest.raises(APIStatusError) as info:
        client.current_user()
    assert info.value.status_code == 500
    assert isinstance(info.value.body, str)


def test_a_bad_gzip_body_is_a_vastkit_error_not_an_httpx_decoding_error() -> None:
    """Was: a bad gzip body -> ``httpx.DecodingError``."""
    tries: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tries.append(1)
        return httpx.Response(
            200, content=b"\x1f\x8bnot-gzip-at-all", headers={"content-encoding": "gzip"}
        )

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with Client("vk-0123", base_url=BASE, http_client=http, clock=ManualClock()) as client:
        with pytest.raises(ResponseDecodingError, match="cannot be decoded") as info:
            client.current_user()
        assert len(tries) == 4  # a damaged body is retried like a dropped connection
        assert isinstance(info.value, APIConnectionError)
        assert isinstance(info.value.__cause__, httpx.DecodingError)
        tries.clear()
        with pytest.raises(ResponseDecodingError):
            client.create_instance(5, CreateInstanceRequest(image="img"))
        assert len(tries) == 1  # a create that may have arrived is never sent again


def test_a_good_gzip_body_is_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=gzip.compress(json.dumps({"id": 9}).encode()),
            headers={"content-encoding": "gzip"},
        )

    with make_client("vk-0123", handler) as client:
        assert client.current_user().id == 9


def test_a_huge_answer_stops_reading_at_the_limit_with_response_too_large_error() -> None:
    """Was: a 1.5M-offer (about 20 MB) answer drove memory to 6.9 GB."""
    chunk = b'{"id":1,"machine_id":1,"num_gpus":1,"gpu_name":"x","dph_base":1,"dph_total":1},'
    streamed: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"offers":['
        for _ in range(1_500_000):
            streamed.append(len(chunk))
            yield chunk
        yield b"{}]}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    with (
        make_client("vk-0123", handler, max_response_bytes=1_000_000) as client,
        pytest.raises(ResponseTooLargeError, match="more than 1,000,000 bytes") as info,
    ):
        client.search_offers("")
    assert info.value.limit == 1_000_000
    assert info.value.unit == "bytes"
    assert isinstance(info.value, ResponseValidationError)
    assert sum(streamed) < 1_100_000  # reading stopped at the limit, not after 120 MB


def test_a_gzip_bomb_stops_at_the_limit_of_decoded_bytes() -> None:
    bomb = gzip.compress(b" " * 50_000_000)
    assert len(bomb) < 100_000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"content-encoding": "gzip"})

    with (
        make_client("vk-0123", handler, max_response_bytes=2_000_000) as client,
        pytest.raises(ResponseTooLargeError),
    ):
        client.current_user()


def test_the_response_limit_is_configurable_and_checked() -> None:
    body = json.dumps({"offers": [offer_json(i) for i in range(50)]}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with make_client("vk-0123", handler, max_response_bytes=len(body)) as client:
        assert len(client.search_offers("")) == 50
    with make_client("vk-0123", handler, max_response_bytes=None) as client:
        assert len(client.search_offers("")) == 50
    with pytest.raises(ValueError, match="max_response_bytes"):
        make_client("vk-0123", handler, max_response_bytes=0)


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b"<html>oops</html>", b'{"offers": [', b"\xff\xfe\x00garbage", b"NaNx"],
)
def test_a_garbled_success_body_is_a_response_validation_error(body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with make_client("vk-0123", handler) as client, pytest.raises(ResponseValidationError):
        client.search_offers("")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NaN", "nan"),
        ("Infinity", "inf"),
        ("-Infinity", "-inf"),
        ("1e999", "inf"),
        ("1" + "0" * 400, "inf"),
        ("-5", "-5.0"),
        ('"NaN"', "nan"),
    ],
)
def test_an_offer_with_a_nan_negative_or_huge_price_parses_as_a_float(
    raw: str, expected: str
) -> None:
    """The selector drops such offers with a counted reason; parsing must not crash."""
    text = json.dumps(offer_json(1))  # the later duplicate keys win
    body = (
        '{"offers": [' + text[:-1] + f', "dph_total": {raw}, "dph_base": {raw}' + "}]}"
    ).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with make_client("vk-0123", handler) as client:
        [parsed] = client.search_offers("")
    assert repr(parsed.dph_total) == repr(float(expected))
    assert repr(parsed.dph_base) == repr(float(expected))


@pytest.mark.parametrize("url", ["https://", "http://", "https:///path"])
def test_a_log_result_url_without_a_host_is_a_response_validation_error(url: str) -> None:
    """Found by the fuzz suite: ``result_url: "https://"`` escaped as a bare ValueError."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "result_url": url})

    with make_client("vk-0123", handler) as client, pytest.raises(ResponseValidationError):
        client.instance_logs(5)
