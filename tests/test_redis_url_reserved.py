"""A Redis password holding '/', '?' or '#' unencoded cuts the URL short: every process
says so in one ``error:`` line naming the setting, and never shows the password."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mailqueue.core.urls import check_url, mask_url
from mailqueue.errors import ConfigurationError
from mailqueue.settings import Settings

PASSWORDS = ["Xq/SECRET-9", "Xq?SECRET-9", "Xq#SECRET-9", "Xq/SEC?RET#-9"]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("form", ["redis://:{}@127.0.0.1:6390/0", "redis://ops:{}@127.0.0.1:6390/0",
                                  "rediss://:{}@redis.example:6390", "unix://:{}@/tmp/redis.sock",
                                  "redis+sentinel://:{}@s1:26379,s2:26379/mymaster"])  # fmt: skip
def test_the_mask_hides_all_of_such_a_password(form: str, password: str) -> None:
    masked = mask_url(form.format(password))

    assert "SEC" not in masked and "Xq" not in masked
    assert masked.startswith(form.partition(":")[0] + "://***@")


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("setting", ["MAILQUEUE_REDIS_URL", "MAILQUEUE_BROKER_URL"])
def test_settings_refuse_it_naming_the_setting_masked(setting: str, password: str) -> None:
    url = f"redis://:{password}@127.0.0.1:6390/0"

    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({setting: url})

    assert setting in str(info.value)
    assert "percent-encode" in str(info.value)
    assert "SEC" not in str(info.value) and "Xq" not in str(info.value)


def test_other_malformed_urls_are_refused_without_redis_pys_words() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_url("redis://:SECRET-9@127.0.0.1:port/0", "redis_url", "MAILQUEUE_REDIS_URL")

    assert "MAILQUEUE_REDIS_URL is malformed" in str(info.value)
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["redis://:pa%2FSECRET@127.0.0.1:6390/0", "redis://:p@ss@127.0.0.1:6390/0",
     "unix:///run/redis@main.sock", "redis+sentinel://s1:26379/mymaster?sentinel_password=a@b"],
)  # fmt: skip
def test_encoded_or_unambiguous_urls_are_accepted(url: str) -> None:
    check_url(url, "redis_url")


@pytest.mark.parametrize("command", [["status", "some-id"], ["worker"], ["dashboard"],
                                     ["serve-webhooks"]])  # fmt: skip
def test_every_command_says_it_in_one_line(command: list[str]) -> None:
    env = {
        **os.environ,
        "MAILQUEUE_REDIS_URL": "redis://:Xq/SECRET-9@127.0.0.1:6390/0",
        "MAILTRAP_API_TOKEN": "tok",
        "MAILQUEUE_WEBHOOK_SECRET": "hooks:pw",
        "MAILQUEUE_DASHBOARD_SECRET": "ops:pw",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mailqueue", *command],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    out = (result.stdout + result.stderr).decode()
    assert result.returncode != 0
    assert out.startswith("error: ") and out.count("\n") == 1, out
    assert "MAILQUEUE_REDIS_URL" in out
    assert "SECRET" not in out
