"""Options every subcommand shares (logging), --health-address, the start-up retries and progress lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from torchproof import cli, logs
from torchproof.connection import until_reachable
from torchproof.kube import KubeError
from torchproof_sim.simulate import progress_line


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    for name in (*logs.QUIET_BELOW_DEBUG, logs.PROGRESS_LOGGER):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.parametrize(("argv", "level"), [
    (["status"], logging.WARNING),
    (["-v", "status"], logging.INFO),
    (["-vv", "status"], logging.DEBUG),
    (["status", "-v"], logging.INFO),
    (["--log-level", "error", "-vv", "status"], logging.ERROR),  # the explicit level wins
    (["--log-level", "info", "status"], logging.INFO),  # not reset by the subcommand's own copy of the option
    (["status", "--log-level", "debug"], logging.DEBUG),
    (["run", "--log-level=warning"], logging.WARNING),
    (["simulate", "--fleet=f", "--profile=p", "--log-level", "error"], logging.ERROR),
    (["cleanup", "-v"], logging.INFO),
    (["probe", "--log-level", "debug", "--device", "cpu"], logging.DEBUG),
])
def test_every_subcommand_takes_the_logging_options(argv: list[str], level: int) -> None:
    args, _ = cli.parser().parse_known_args(argv)
    assert logs.level_of(args) == level


@pytest.mark.parametrize("argv", [["--log-level", "loud", "status"], ["status", "--log-format", "xml"]])
def test_a_bad_logging_option_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_known_args(argv)
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def configured(*argv: str) -> io.StringIO:
    stream = io.StringIO()
    args, _ = cli.parser().parse_known_args([*argv, "status"])
    logs.configure(args, stream)
    return stream


@pytest.mark.parametrize(("argv", "kopf_warns", "kopf_debugs", "urllib3_warns"), [
    ((), True, False, False),
    (("--log-level", "error"), False, False, False),
    (("-vv",), True, True, True),
])
def test_kopf_follows_the_chosen_level(argv: tuple[str, ...], kopf_warns: bool, kopf_debugs: bool,
                                       urllib3_warns: bool) -> None:
    configured(*argv)
    assert logging.getLogger("kopf.objects").isEnabledFor(logging.WARNING) is kopf_warns
    assert logging.getLogger("kopf.activities").isEnabledFor(logging.DEBUG) is kopf_debugs
    assert logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.WARNING) is urllib3_warns


def test_json_logs_are_one_object_per_line_with_the_exception_as_text() -> None:
    stream = configured("--log-format", "json", "-v")
    logging.getLogger("kopf.objects").info("handler %s done", "reconcile",
                                           extra={"k8s_ref": {"kind": "PyTorchReleaseProfile", "name": "p"}})
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("torchproof").exception("pass failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.keys() == {"time", "level", "logger", "message", "object"}
    assert (first["level"], first["logger"], first["message"]) == ("info", "kopf.objects", "handler reconcile done")
    assert first["object"] == {"kind": "PyTorchReleaseProfile", "name": "p"} and first["time"].endswith("+00:00")
    assert second["message"] == "pass failed" and second["level"] == "error"
    assert second["exception"].startswith("Traceback") and second["exception"].endswith("ValueError: bad value")


def test_text_logs_name_level_and_logger() -> None:
    stream = configured()
    logging.getLogger("kopf.objects").warning("slow")
    assert stream.getvalue().rstrip().endswith(" WARNING kopf.objects: slow")


@pytest.mark.parametrize(("argv", "shown"), [((), True), (("--log-level", "warning"), True),
                                             (("--log-level", "error"), False)])
def test_progress_lines_show_unless_only_errors_are_asked_for(argv: tuple[str, ...], shown: bool) -> None:
    stream = configured(*argv)
    logging.getLogger(logs.PROGRESS_LOGGER).info("p: 1 of 2 nodes have a verdict")
    assert ("p: 1 of 2 nodes have a verdict" in stream.getvalue()) is shown


@pytest.mark.parametrize(("address", "port", "url"), [
    ("0.0.0.0", 8081, "http://0.0.0.0:8081/healthz"),
    ("127.0.0.1", 9000, "http://127.0.0.1:9000/healthz"),
    ("::", 8081, "http://[::]:8081/healthz"),
    ("0.0.0.0", 0, None),
])
def test_the_liveness_url_follows_health_address_and_port(address: str, port: int, url: str | None) -> None:
    args = cli.parser().parse_args(["run", f"--health-address={address}", f"--health-port={port}"])
    assert cli.liveness_url(args.health_address, args.health_port) == url


def test_health_address_defaults_to_every_interface() -> None:
    assert cli.parser().parse_args(["run"]).health_address == "0.0.0.0"


class Flaky:
    """Fails with the given statuses, then answers."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.statuses:
            raise KubeError("list profiles", self.statuses.pop(0), "no route")
        return "answer"


async def test_an_unreachable_api_server_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    call = Flaky(0, 503, 0, 429, 0, 0, 502)
    with caplog.at_level(logging.WARNING, "torchproof.connection"):
        assert await until_reachable(call, first=1, cap=8, sleep=sleep) == "answer"
    assert slept == [1, 2, 4, 8, 8, 8, 8] and call.calls == 8
    assert caplog.messages[0] == "retrying in 1s: list profiles failed (0): no route"
    assert caplog.messages[1] == "retrying in 2s: list profiles failed (503): no route"


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refusal_is_not_retried(status: int) -> None:
    async def sleep(_: float) -> None:
        raise AssertionError("no retry")

    with pytest.raises(KubeError) as exc:
        await until_reachable(Flaky(status), sleep=sleep)
    assert exc.value.status == status


@pytest.mark.parametrize(("profile", "line"), [
    (None, "p: no status yet"),
    ({"status": {}}, "p: no status yet"),
    ({"status": {"counts": {"total": 15, "pending": 12, "waiting": 3}}}, "p: 3 of 15 nodes have a verdict"),
    ({"status": {"counts": {"total": 4, "pending": 0}}}, "p: 4 of 4 nodes have a verdict"),
])
def test_the_progress_line_counts_nodes_with_a_verdict(profile: dict[str, Any] | None, line: str) -> None:
    assert progress_line("p", profile) == line
