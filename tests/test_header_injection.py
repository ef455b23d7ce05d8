"""Fields that become header lines of the mail refuse line breaks, naming the field:
the subject, attachment filenames, MIME types and content ids, tags, metadata keys."""

from __future__ import annotations

from typing import Any

import pytest

import mailqueue
from mailqueue.core.payload import build_payload
from mailqueue.settings import Settings

SETTINGS = Settings(api_token="injection-test-token")
BASE: dict[str, Any] = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Hello",
    "text": "Body",
}
INJECTED = "x\r\nBcc: victim@example.org"


def attachment(**fields: Any) -> dict[str, Any]:
    return {"filename": "a.txt", "content": "eA==", "mimetype": "text/plain", **fields}


@pytest.mark.parametrize("breaks", [INJECTED, "x\nBcc: v@example.org", "x\rY"])
@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (lambda v: {"subject": v}, "subject"),
        (lambda v: {"attachments": [attachment(filename=v)]}, "attachments[0].filename"),
        (lambda v: {"attachments": [attachment(), attachment(mimetype=f"text/{v}")]},
         "attachments[1].mimetype"),
        (lambda v: {"attachments": [attachment(content_id=v, inline=True)]},
         "attachments[0].content_id"),
        (lambda v: {"tags": [v]}, "tags[0]"),
        (lambda v: {"tags": ["ok", v]}, "tags[1]"),
        (lambda v: {"metadata": {v: "1"}}, "metadata."),
    ],
    ids=["subject", "filename", "mimetype", "content_id", "tag", "second tag", "metadata key"],
)  # fmt: skip
def test_a_line_break_is_refused_naming_the_field(fields: Any, named: str, breaks: str) -> None:
    with pytest.raises(mailqueue.ValidationError) as info:
        build_payload({**BASE, **fields(breaks)}, SETTINGS)

    assert info.value.field is not None and info.value.field.startswith(named)
    assert "line break" in str(info.value)


def test_merge_metadata_keys_refuse_line_breaks_too() -> None:
    message = {**BASE, "merge_metadata": {"alice@example.com": {INJECTED: "1"}}}

    with pytest.raises(mailqueue.ValidationError) as info:
        build_payload(message, SETTINGS)

    assert info.value.field is not None and info.value.field.startswith("merge_metadata.")


def test_line_breaks_stay_allowed_where_they_belong() -> None:
    message = {
        **BASE,
        "text": "line one\r\nline two",
        "html": "<p>a</p>\n<p>b</p>",
        "metadata": {"note": "two\nlines"},
    }

    (call,) = build_payload(message, SETTINGS)

    assert call.json["text"] == "line one\r\nline two"
    assert call.json["custom_variables"] == {"note": "two\nlines"}
