"""A small client of the litminer HTTP API, used by the CLI."""

from __future__ import annotations

import os

import httpx
import msgspec

from contracts import TaskAccepted

DEFAULT_API_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """The API refused a request; ``status`` is the HTTP status (0 when it could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """Talks to a running API at ``LITMINER_API_URL`` with ``LITMINER_API_KEY`` (when set)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout_s: float = 30.0) -> None:
        self.base_url = (base_url or os.environ.get("LITMINER_API_URL") or DEFAULT_API_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LITMINER_API_KEY", "")
        self.http = httpx.Client(base_url=self.base_url, headers={"X-API-Key": key} if key else {}, timeout=timeout_s)

    def reprocess(self, task_id: str, body: dict[str, object]) -> TaskAccepted:
        """``POST /api/v1/tasks/{task_id}/reprocess``."""
        return msgspec.json.decode(self._send("POST", f"/api/v1/tasks/{task_id}/reprocess", body), type=TaskAccepted)

    def _send(self, method: str, path: str, body: dict[str, object] | None = None) -> bytes:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the litminer API at {self.base_url} ({exc})") from None
        if response.is_error:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, f"{response.status_code}: {detail}")
        return response.content

    def close(self) -> None:
        self.http.close()
