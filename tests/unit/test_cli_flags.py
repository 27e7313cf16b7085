"""Every node setting has a command-line flag (README: "every node setting has a flag"),
derived from GatewaySettings, so a new setting gets one without touching the CLI."""

from __future__ import annotations

from dataclasses import fields

import pytest

from fastgw.cli import _overrides, _parser
from fastgw.config.settings import GatewaySettings, load_settings


def test_every_setting_has_a_flag() -> None:
    settable = {f.name for f in fields(GatewaySettings) if f.init}
    help_text = _parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    for name in settable:
        assert "--" + name.replace("_", "-") in help_text, name


def test_help_lists_the_public_commands_only() -> None:
    help_text = _parser().format_help()
    assert "{run,check,config}" in help_text
    assert "worker" not in help_text and "SUPPRESS" not in help_text
    # Still a command: the supervisor starts its workers with it.
    assert _parser().parse_args(["worker", "--ipc-fd", "3"]).command == "worker"


@pytest.mark.parametrize("argv,expected", [
    (["--metrics-prefix", "kong"], {"metrics_prefix": "kong"}),
    (["--access-log", "stdout"], {"access_log": "stdout"}),
    (["--admin-token", "s3cret"], {"admin_token": "s3cret"}),
    (["--workers", "3", "--proxy-listen", "127.0.0.1:18000"],
     {"workers": 3, "proxy_listen": "127.0.0.1:18000"}),
    (["--trusted-ips", "10.0.0.0/8,::1"], {"trusted_ips": ("10.0.0.0/8", "::1")}),
])
def test_flags_override_the_file(argv: list[str], expected: dict[str, object]) -> None:
    args = _parser().parse_args(["run", "-c", "x.json", *argv])
    settings = load_settings({"metrics_prefix": "fastgw", "workers": 1}, {}, _overrides(args))
    for name, value in expected.items():
        assert getattr(settings, name) == value
