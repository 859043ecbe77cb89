"""Mistakes with `ciolake send-test` and `ciolake webhooks`, each answered in one line.

The App API is the fake one on a loopback port; the receiver is a real `ciolake serve`. A
server that accepts connections and never answers is a listening socket nobody accepts on.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciolake.customerio.client import API_KEY_ENV
from ciolake.customerio.sender import MAX_COUNT
from tests.customerio.fake_app_api import TEST_API_KEY, FakeAppApi
from tests.mistakes.conftest import (
    EXIT_FAILURE,
    EXIT_USAGE,
    RunCiolake,
    assert_one_line_error,
)
from tests.support import TEST_KEY, WEBHOOK_PATH, ServerProcess, free_port, running_server

API_ENV = {API_KEY_ENV: TEST_API_KEY}
# Longer than any answer below should take, far shorter than a hang.
BOUND_S = 30.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app_api() -> Iterator[FakeAppApi]:
    """The fake App API, without its rate limit (each test sends a request or two)."""
    fake = FakeAppApi(rate_limit_per_s=None).start()
    yield fake
    fake.stop()


@pytest.fixture
def silent_base() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `ciolake serve` signing with ``TEST_KEY``, shared by this module's tests."""
    with running_server(tmp_path_factory.mktemp("receiver") / "data") as server:
        yield server


# webhooks ----------------------------------------------------------------------------------------


def test_webhooks_file_that_is_not_utf8(
    run_ciolake: RunCiolake, app_api: FakeAppApi, tmp_path: Path
) -> None:
    spec = tmp_path / "hook.toml"
    spec.write_bytes(b'name = "caf\xe9"\n')

    result = run_ciolake(
        "webhooks", "create", "--file", spec, "--base-url", app_api.base_url, env=API_ENV
    )

    assert_one_line_error(result, EXIT_USAGE, "hook.toml is not UTF-8", "save it as UTF-8")
    assert app_api.requests == []


@pytest.mark.parametrize(
    ("command", "webhook_id"),
    [("get", "-5"), ("get", "0"), ("update", "-5"), ("delete", "-12"), ("disable", "-1")],
)
def test_webhooks_id_that_is_not_positive(
    run_ciolake: RunCiolake, app_api: FakeAppApi, command: str, webhook_id: str
) -> None:
    result = run_ciolake(
        "webhooks", command, webhook_id, "--base-url", app_api.base_url, env=API_ENV
    )

    assert_one_line_error(
        result, EXIT_USAGE, f"{webhook_id} is not a webhook id", "a positive integer"
    )
    assert app_api.requests == []


@pytest.mark.parametrize(
    ("body", "output"),
    [
        (b"{}", ()),
        (b"{}", ("--json",)),
        (b'{"webhooks": []}', ()),
        (b'{"reporting_webhooks": null}', ()),
        (b"<html>a proxy</html>", ()),
    ],
)
def test_webhooks_list_of_an_answer_of_another_shape(
    run_ciolake: RunCiolake, app_api: FakeAppApi, body: bytes, output: tuple[str, ...]
) -> None:
    app_api.answer_next(body)

    result = run_ciolake("webhooks", "list", *output, "--base-url", app_api.base_url, env=API_ENV)

    assert_one_line_error(
        result, EXIT_FAILURE, f"the App API at {app_api.base_url} answered something unexpected"
    )
    assert result.stdout == ""


# A server that never answers, for either command ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("webhooks", "list", "--base-url", "{base}"), "the App API at {base}"),
        (("send-test", "--key", TEST_KEY, "--url", "{base}/webhooks/customerio"), "{base}"),
    ],
    ids=["webhooks list", "send-test"],
)
def test_a_server_that_never_answers(
    run_ciolake: RunCiolake, silent_base: str, args: tuple[str, ...], named: str
) -> None:
    command = [arg.format(base=silent_base) for arg in args]
    started = time.monotonic()

    result = run_ciolake(*command, "--timeout", "1", env=API_ENV, timeout=BOUND_S)

    assert time.monotonic() - started < BOUND_S
    assert_one_line_error(
        result, EXIT_FAILURE, "no answer from", named.format(base=silent_base), "within 1s"
    )


# send-test ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", ["0", "-3", "99999999999999999999999", str(MAX_COUNT + 1)])
def test_send_test_count_out_of_range(run_ciolake: RunCiolake, count: str) -> None:
    # Nothing listens on the URL: a count that got through would fail differently.
    url = f"http://127.0.0.1:{free_port()}{WEBHOOK_PATH}"

    result = run_ciolake("send-test", "--count", count, "--key", "k", "--url", url, timeout=BOUND_S)

    assert_one_line_error(result, EXIT_USAGE, "--count", f"from 1 to {MAX_COUNT}", f"got {count}")


def test_send_test_help_states_the_count_maximum_and_what_all_with_a_metric_sends(
    run_ciolake: RunCiolake,
) -> None:
    result = run_ciolake("send-test", "--help")
    text = " ".join(result.stdout.split())

    assert result.code == 0
    assert f"--count <int> How many events, 1 to {MAX_COUNT}" in text
    assert "(--all --metric opened: the opened event of every channel)" in text


@pytest.mark.e2e
def test_send_test_all_with_a_metric_sends_that_metric_of_every_channel(
    run_ciolake: RunCiolake, receiver: ServerProcess
) -> None:
    result = run_ciolake(
        "send-test", "--all", "--metric", "opened", "--key", TEST_KEY, "--url", receiver.url
    )

    assert result.code == 0, result.stderr
    assert f"send-test: 4 events to {receiver.url}" in result.stderr
    assert result.error_lines == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--key", f"  {TEST_KEY}  "), {}),
        ((), {"CIOLAKE_SEND_TEST_KEY": f" {TEST_KEY}\n"}),
        ((), {"CIOLAKE_SIGNING_KEYS": f" {TEST_KEY} , an-older-key"}),
    ],
    ids=["--key", "CIOLAKE_SEND_TEST_KEY", "CIOLAKE_SIGNING_KEYS"],
)
def test_send_test_key_with_blanks_is_trimmed_as_serve_trims_it(
    run_ciolake: RunCiolake, receiver: ServerProcess, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = run_ciolake("send-test", *args, "--url", receiver.url, env=env)

    assert result.code == 0, result.stderr
    assert "200" in result.stderr
    assert result.error_lines == []


def test_send_test_to_a_closed_port(run_ciolake: RunCiolake) -> None:
    url = f"http://127.0.0.1:{free_port()}{WEBHOOK_PATH}"

    result = run_ciolake("send-test", "--key", TEST_KEY, "--url", url, timeout=BOUND_S)

    assert_one_line_error(
        result, EXIT_FAILURE, f"cannot connect to {url} (connection refused)", "--url"
    )


@pytest.mark.e2e
def test_send_test_to_a_url_that_redirects(
    run_ciolake: RunCiolake, receiver: ServerProcess
) -> None:
    result = run_ciolake("send-test", "--key", TEST_KEY, "--url", f"{receiver.url}/")

    assert_one_line_error(
        result,
        EXIT_USAGE,
        f"{receiver.url}/ answered 307, a redirect to {receiver.url}:",
        "a webhook URL must be exact",
        f"use --url {receiver.url}",
    )


@pytest.mark.e2e
def test_send_test_with_a_key_the_receiver_does_not_have(
    run_ciolake: RunCiolake, receiver: ServerProcess
) -> None:
    result = run_ciolake("send-test", "--count", "2", "--key", "not-the-key", "--url", receiver.url)

    assert_one_line_error(
        result, EXIT_FAILURE, "2 of 2 events", "answered 401", "CIOLAKE_SIGNING_KEYS (--key)"
    )
