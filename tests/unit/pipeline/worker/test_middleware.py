"""pipeline.worker.middleware: the retry backoff schedule of StageRetries, with and without jitter."""

from pipeline.worker.middleware import StageRetries


def test_backoff_follows_the_seed_schedule_and_caps():
    retries = StageRetries(max_retries=3, min_backoff_ms=30_000, max_backoff_ms=120_000, jitter=False, permanent=())
    assert [retries.backoff_ms(n) for n in range(4)] == [30_000, 60_000, 120_000, 120_000]


def test_jitter_is_opt_in_and_bounded():
    retries = StageRetries(max_retries=3, min_backoff_ms=1000, max_backoff_ms=120_000, jitter=True, permanent=())
    delays = {retries.backoff_ms(0) for _ in range(50)}
    assert all(1000 <= d <= 2000 for d in delays) and len(delays) > 1
