"""pipeline.webhooks: signatures receivers can verify, the payload, callback URL checks and their settings."""

import time

import msgspec
import pytest

from contracts import Event, JobRecord, decode_webhook_payload, encode_webhook
from pipeline.errors import InvalidRequest, SettingsError
from pipeline.settings import Settings
from pipeline.store import callback_url
from pipeline.webhooks import (
    check_callback_url,
    payload,
    shown_url,
    sign,
    signature_header,
    verify_signature,
)
from tests.fixtures.requests import seed_request

SECRET = "whsec-test-1"
BODY = b'{"id":"d1","type":"task.completed"}'


def test_a_signature_made_now_verifies():
    header = signature_header(SECRET, BODY)
    assert header.startswith("t=") and ",v1=" in header
    assert verify_signature(SECRET, header, BODY)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    # From openssl: echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec-test-1
    expected = "51babe0d18478e93be98eb2223374dabb9d1d54ce1351a0e7d498d59a71870fe"
    assert sign(SECRET, 1_700_000_000, b'{"a":1}') == expected
    assert signature_header(SECRET, b'{"a":1}', timestamp=1_700_000_000) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda header, body: (header, body + b" "),  # the body changed
        lambda header, body: (header, body.replace(b"completed", b"cancelled")),
        lambda header, body: (header.replace("v1=", "v1=0"), body),  # the signature changed
        lambda header, body: (header.split(",")[0], body),  # no signature
        lambda header, body: ("v1=" + header.split("v1=")[1], body),  # no timestamp
        lambda header, body: ("garbage", body),
        lambda header, body: ("", body),
    ],
)
def test_a_tampered_body_or_header_is_rejected(tamper):
    header, body = tamper(signature_header(SECRET, BODY), BODY)
    assert not verify_signature(SECRET, header, body)


def test_another_secret_is_rejected():
    assert not verify_signature("another-secret", signature_header(SECRET, BODY), BODY)


def test_old_and_future_timestamps_are_rejected():
    now = time.time()
    old = signature_header(SECRET, BODY, timestamp=int(now) - 301)
    ahead = signature_header(SECRET, BODY, timestamp=int(now) + 301)
    assert not verify_signature(SECRET, old, BODY)
    assert not verify_signature(SECRET, ahead, BODY)
    assert verify_signature(SECRET, old, BODY, tolerance_s=600)
    recent = signature_header(SECRET, BODY, timestamp=int(now) - 299)
    assert verify_signature(SECRET, recent, BODY)


def test_any_of_several_v1_signatures_may_match():
    header = signature_header(SECRET, BODY)
    timestamp, good = header.split(",")
    assert verify_signature(SECRET, f"{timestamp},v1={'0' * 64},{good}", BODY)
    assert not verify_signature(SECRET, f"{timestamp},v1={'0' * 64},v1=ééé", BODY)


def _job(**changes: object) -> JobRecord:
    fields: dict[str, object] = {
        "task_id": "6f1c7d52-8f7e-4d5b-9a0e-3f1d2c4b5a69",
        "client_id": "client-1",
        "request": seed_request(),
        "created_at": 1.0,
        "updated_at": 2.0,
    }
    return JobRecord(**(fields | changes))  # type: ignore[arg-type]


def _event(status: str, seq: int = 9, stage: str = "done") -> Event:
    return msgspec.convert(
        {
            "task_id": _job().task_id,
            "client_id": "client-1",
            "seq": seq,
            "status": status,
            "stage": stage,
            "message": f"Job {status}",
            "progress": 100,
            "timestamp": 1_700_000_000.5,
        },
        Event,
    )


def test_the_payload_of_a_completed_job_links_its_dataset():
    job = _job(status="completed", stage="done", result_url="/api/v1/datasets/x")
    sent = payload(job, _event("completed"))
    assert (sent.type, sent.status, sent.stage, sent.created) == (
        "task.completed",
        "completed",
        "done",
        1_700_000_000.5,
    )
    assert sent.status_url == f"/tasks/{job.task_id}"
    assert sent.dataset_url == f"/api/v1/datasets/{job.task_id}"
    assert sent.event == _event("completed")
    assert decode_webhook_payload(encode_webhook(sent)) == sent


def test_error_and_cancelled_payloads_have_no_dataset_url_and_an_error_when_failed():
    failed = payload(_job(status="error", error="Stage search failed: HTTP 500"), _event("error", stage="search"))
    assert (failed.type, failed.error, failed.dataset_url) == ("task.error", "Stage search failed: HTTP 500", None)
    cancelled = payload(_job(status="cancelled"), _event("cancelled", stage="search"))
    assert (cancelled.type, cancelled.status, cancelled.stage, cancelled.error) == (
        "task.cancelled",
        "cancelled",
        "search",
        None,
    )


def test_the_delivery_id_is_the_same_for_one_event_and_differs_between_events():
    job = _job(status="completed")
    assert payload(job, _event("completed")).id == payload(job, _event("completed")).id
    assert payload(job, _event("completed")).id != payload(job, _event("completed", seq=20)).id


SIGNING = Settings(webhook_secret=SECRET)


def _refusal(url: str, settings: Settings = SIGNING) -> str:
    with pytest.raises(InvalidRequest) as raised:
        check_callback_url(url, settings)
    assert raised.value.field == "callback_url"
    return str(raised.value)


def test_without_a_secret_a_callback_url_is_refused_saying_what_to_set():
    assert "LITMINER_WEBHOOK_SECRET" in _refusal("https://93.184.216.34/hook", Settings())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.org/hook", "not an http(s) URL"),
        ("https://user:pass@example.org/hook", "user name or password"),
        ("https://token@example.org/hook", "user name or password"),
        ("https://example.org/a hook", "without spaces"),
        ("https://example.org/" + "a" * 2100, "at most 2048"),
        ("http://10.1.2.3/hook", "a private address (10.1.2.3)"),
        ("http://127.0.0.1:8080/hook", "LITMINER_WEBHOOK_HOSTS"),
        ("http://169.254.169.254/latest/meta-data", "a private address"),
        ("http://[::1]/hook", "a private address"),
        ("http://224.0.0.1/hook", "a private address"),
        ("http://localhost/hook", "a private address (localhost)"),
        ("http://[::1/hook", "not a valid URL"),
        ("https://example.org:99999/hook", "not a valid port"),
    ],
)
def test_callback_urls_webhooks_must_not_go_to_are_refused(url, reason):
    assert reason in _refusal(url)


def test_a_public_address_or_an_allowed_host_passes():
    check_callback_url("https://93.184.216.34/hook?token=abc", SIGNING)
    allowed = msgspec.structs.replace(SIGNING, webhook_hosts=("LocalHost", "127.0.0.1"))
    check_callback_url("http://127.0.0.1:8080/hook", allowed)
    check_callback_url("http://localhost/hook", allowed)


def test_shown_urls_drop_credentials_the_query_string_and_fragment():
    assert shown_url("https://example.org/hook/1?token=secret#x") == "https://example.org/hook/1"
    assert shown_url("https://me:pw@example.org:8443/hook") == "https://example.org:8443/hook"


def test_a_job_uses_its_own_callback_url_else_its_owners_else_the_default():
    settings = Settings(
        webhook_secret=SECRET, callback_urls={"0123456789abcdef": "https://a.test/", "*": "https://b.test/"}
    )
    own = _job(request=seed_request(callback_url="https://own.test/"), owner="0123456789abcdef")
    assert callback_url(own, settings) == "https://own.test/"
    assert callback_url(_job(owner="0123456789abcdef"), settings) == "https://a.test/"
    assert callback_url(_job(owner="fedcba9876543210"), settings) == "https://b.test/"
    assert callback_url(_job(), Settings()) is None


def test_webhook_settings_come_from_the_environment():
    settings = Settings.from_env(
        {
            "LITMINER_WEBHOOK_SECRET": SECRET,
            "LITMINER_CALLBACK_URLS": "0123456789abcdef=https://a.test/hook?x=1, *=http://b.test/",
            "LITMINER_WEBHOOK_HOSTS": "receiver.internal,10.0.0.5",
            "LITMINER_WEBHOOK_RETRY_S": "1,1,1",
            "LITMINER_WEBHOOK_TIMEOUT_S": "2.5",
        }
    )
    assert settings.callback_urls == {"0123456789abcdef": "https://a.test/hook?x=1", "*": "http://b.test/"}
    assert settings.webhook_hosts == ("receiver.internal", "10.0.0.5")
    assert (settings.webhook_retry_s, settings.webhook_timeout_s) == ((1.0, 1.0, 1.0), 2.5)
    assert SECRET not in repr(settings) and "a.test" not in repr(settings)
    defaults = Settings.from_env({})
    assert (defaults.webhook_secret, defaults.callback_urls, defaults.webhook_retry_s) == (None, {}, (5, 30, 120, 600))
    assert Settings.from_env({"LITMINER_WEBHOOK_RETRY_S": "none"}).webhook_retry_s == ()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LITMINER_CALLBACK_URLS": "*=https://a.test/"}, "LITMINER_WEBHOOK_SECRET"),
        ({"LITMINER_WEBHOOK_SECRET": "s", "LITMINER_CALLBACK_URLS": "alice=https://a.test/"}, "owner=URL"),
        ({"LITMINER_WEBHOOK_SECRET": "s", "LITMINER_CALLBACK_URLS": "https://a.test/"}, "owner=URL"),
        ({"LITMINER_WEBHOOK_SECRET": "s", "LITMINER_CALLBACK_URLS": "*=ftp://a.test/"}, "not an http(s) URL"),
        ({"LITMINER_WEBHOOK_RETRY_S": "5,soon"}, "LITMINER_WEBHOOK_RETRY_S"),
        ({"LITMINER_WEBHOOK_RETRY_S": "5,-1"}, "LITMINER_WEBHOOK_RETRY_S"),
        ({"LITMINER_WEBHOOK_TIMEOUT_S": "0"}, "LITMINER_WEBHOOK_TIMEOUT_S"),
    ],
)
def test_unusable_webhook_settings_stop_the_process_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)
