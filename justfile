# Thin aliases over the README commands (https://just.systems).

# the seed's example end to end, embedded Redis, no setup
demo:
    uv run litminer demo

# the test suite (real Redis: REDIS_URL, else Docker, else the embedded redis-server)
test:
    uv run pytest

lint:
    uv run ruff check . && uv run ruff format --check . && uv run mypy && uv run lint-imports

fmt:
    uv run ruff format . && uv run ruff check --fix .

# Redis, the API and WORKERS worker containers (compose.yaml)
up workers="2":
    docker compose up --build --detach --scale worker={{workers}}

down:
    docker compose down

logs:
    docker compose logs --follow

api:
    uv run litminer api --host 0.0.0.0 --port 8000

worker:
    uv run litminer worker --processes 2 --threads 8

bench:
    uv run python -m bench all
