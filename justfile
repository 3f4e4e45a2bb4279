# Thin aliases over the README commands.

demo:
    uv run litminer demo

test:
    uv run pytest

lint:
    uv run ruff check . && uv run ruff format --check . && uv run mypy

api:
    uv run litminer api --host 0.0.0.0 --port 8000

worker:
    uv run litminer worker --processes 2 --threads 8

bench:
    uv run python -m bench all
