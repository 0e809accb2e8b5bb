"""keyvault's boto3 clients read response timestamps as botocore does, only faster."""

from __future__ import annotations

import locale
from collections.abc import Iterator

import pytest
from botocore.utils import parse_timestamp as botocore_parse

from keyvault.stores._awsclient import ClientSettings, make_client, parse_timestamp

SAMPLES = [
    "2026-12-05T04:26:31.123Z",  # S3 listings
    "2026-12-05T04:26:31Z",
    "2026-12-05T04:26:31.123456+02:00",
    "Sat, 05 Dec 2026 04:26:31 GMT",  # S3 headers (Last-Modified)
    "Thu, 29 Feb 2024 23:59:59 GMT",
    "Sat, 5 Dec 2026 04:26:31 GMT",
    "1733372791",  # what botocore also accepts: handed to it
    "1733372791.5",
    "2026-12-05T04:26:31",
    "Sat, 05 Dec 2026 04:26:31 +0000",
]


@pytest.mark.parametrize("value", SAMPLES)
def test_the_same_instant_as_botocore(value: str) -> None:
    ours, theirs = parse_timestamp(value), botocore_parse(value)
    assert ours == theirs
    assert (ours.utcoffset(), ours.tzinfo is None) == (theirs.utcoffset(), theirs.tzinfo is None)


@pytest.mark.parametrize(
    "value",
    [
        "Sat, 05 Foo 2026 04:26:31 GMT",
        "Sat, 31 Feb 2026 04:26:31 GMT",
        "2026-13-05T04:26:31Z",
        "not a time",
    ],
)
def test_junk_is_refused_as_botocore_refuses_it(value: str) -> None:
    with pytest.raises(ValueError):
        botocore_parse(value)
    with pytest.raises(ValueError):
        parse_timestamp(value)


@pytest.fixture
def german_time_names() -> Iterator[None]:
    previous = locale.setlocale(locale.LC_TIME)
    try:
        locale.setlocale(locale.LC_TIME, "de_DE.UTF-8")
    except locale.Error:
        locale.setlocale(locale.LC_TIME, "C")  # no such locale here: the test still runs
    try:
        yield
    finally:
        locale.setlocale(locale.LC_TIME, previous)


def test_header_dates_do_not_depend_on_the_locale(german_time_names: None) -> None:
    assert parse_timestamp("Tue, 01 Dec 2026 00:00:00 GMT") == botocore_parse(
        "Tue, 01 Dec 2026 00:00:00 GMT"
    )


def test_the_clients_keyvault_makes_use_it() -> None:
    """The parser the endpoint builds for each response (botocore internals: a botocore
    that stops honouring the session's parser defaults fails here, not silently)."""
    settings = ClientSettings(
        service="s3",
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        profile=None,
        connect_timeout=1.0,
        read_timeout=1.0,
        max_attempts=1,
    )
    client = make_client(settings, {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    try:
        factory = client._endpoint._response_parser_factory
        for protocol in ("rest-xml", "json"):
            assert factory.create_parser(protocol)._timestamp_parser is parse_timestamp
    finally:
        client.close()
