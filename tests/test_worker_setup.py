"""What a worker says about its settings before it takes work: refusals and warnings."""

from __future__ import annotations

import pytest

from mailqueue.errors import ConfigurationError
from mailqueue.settings import DEFAULT_BULK_API_URL, Settings
from mailqueue.tasks.worker_setup import check_worker_settings, worker_warnings

LOCAL = "http://127.0.0.1:8025/api/"


@pytest.mark.parametrize(
    "api_url", [LOCAL, "http://localhost:8025/api/", "http://[::1]:8025/api/"]
)
def test_a_local_api_url_with_the_bulk_url_left_to_mailtrap_is_refused(api_url: str) -> None:
    settings = Settings(api_token="t", api_url=api_url)

    with pytest.raises(ConfigurationError) as caught:
        check_worker_settings(settings)

    assert caught.value.setting == "bulk_api_url"
    assert "MAILTRAP_BULK_API_URL is not set" in str(caught.value)
    assert DEFAULT_BULK_API_URL in str(caught.value)


def test_a_bulk_url_set_to_mailtrap_on_purpose_starts_with_a_warning() -> None:
    settings = Settings(api_token="t", api_url=LOCAL, bulk_api_url=DEFAULT_BULK_API_URL)

    check_worker_settings(settings)

    (warning,) = worker_warnings(settings)
    assert "MAILTRAP_BULK_API_URL" in warning and "leaves" in warning


@pytest.mark.parametrize(
    "settings",
    [
        Settings(api_token="t", api_url=LOCAL, bulk_api_url="http://127.0.0.1:8025/bulk/api/"),
        Settings(api_token="t"),  # Mailtrap for both
        Settings(api_token="t", api_url=LOCAL, sandbox_id="7"),  # both go to the sandbox
        Settings(api_token="t", api_url="https://proxy.example.com/api/"),
    ],
    ids=["both local", "both Mailtrap", "sandbox", "api url elsewhere"],
)
def test_streams_that_stay_together_start_without_a_word(settings: Settings) -> None:
    check_worker_settings(settings)

    assert worker_warnings(settings) == []
