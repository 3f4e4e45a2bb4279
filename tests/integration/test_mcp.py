"""`litminer mcp` as an agent runs it: a subprocess spoken to over stdio by the official MCP SDK's client,
against a real API, worker and Redis."""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from services.demo import SEED_FIELDS, SEED_QUERY

LITMINER = shutil.which("litminer", path=str(Path(sys.executable).parent)) or "litminer"
TOOLS = {"generate_dataset", "get_status", "get_dataset", "cancel_task"}


def server(api_url: str) -> StdioServerParameters:
    """``litminer --log-level INFO mcp`` on the test's API (INFO, so the server has log lines to keep off stdout)."""
    return StdioServerParameters(
        command=LITMINER, args=["--log-level", "INFO", "mcp"], env={"LITMINER_API_URL": api_url, "LITMINER_API_KEY": ""}
    )


def content(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error and result.structured_content is None
    return " ".join(getattr(block, "text", "") for block in result.content)


def test_an_agent_lists_tools_generates_polls_reads_the_dataset_and_cancels(run_worker, api_url, tmp_path):
    worker = run_worker()
    errlog = tmp_path / "mcp-stderr.log"

    async def run() -> None:
        with errlog.open("w") as stderr:
            async with stdio_client(server(api_url), errlog=stderr) as (read, write), ClientSession(read, write) as mcp:
                await mcp.initialize()
                tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
                assert set(tools) == TOOLS
                assert tools["generate_dataset"].input_schema["required"] == ["question", "fields"]
                assert tools["get_dataset"].output_schema is not None
                assert tools["get_status"].annotations is not None and tools["get_status"].annotations.read_only_hint

                arguments = {"question": SEED_QUERY, "fields": SEED_FIELDS, "rows": 3, "sources": ["local"]}
                started = content(await mcp.call_tool("generate_dataset", arguments))
                task_id = started["task_id"]
                assert uuid.UUID(task_id) and started["status"] in ("queued", "processing")

                polls = 0
                state = started
                while state["status"] not in ("completed", "error", "cancelled"):
                    assert polls < 30, state
                    polls += 1
                    state = content(await mcp.call_tool("get_status", {"task_id": task_id, "wait_s": 2}))
                    assert state["task_id"] == task_id and 0 <= state["progress"] <= 100
                assert state["status"] == "completed" and state["stage"] == "done" and state["rows"] == 3

                dataset = content(await mcp.call_tool("get_dataset", {"task_id": task_id}))
                assert dataset["columns"] == [f["name"] for f in SEED_FIELDS] and dataset["question"] == SEED_QUERY
                assert len(dataset["rows"]) == 3 and dataset["csv"] is None
                for row in dataset["rows"]:
                    assert row["values"]["technology_name"] and row["confidence"] in ("high", "medium", "low")
                    assert row["citations"], row
                    for citation in row["citations"]:
                        assert citation["title"] and citation["quote"] and citation["field"] == "technology_name"
                assert dataset["download_url"] == f"{api_url}/api/v1/datasets/{task_id}?format=json"
                table = content(await mcp.call_tool("get_dataset", {"task_id": task_id, "format": "csv"}))
                assert table["rows"] == [] and table["csv"].startswith("technology_id,technology_name,confidence")

                refused = error_text(
                    await mcp.call_tool("generate_dataset", {**arguments, "fields": [{"name": "a"}] * 2})
                )
                assert "field_definitions[1].name" in refused and "duplicate" in refused
                unknown = str(uuid.uuid4())
                assert f"no task with id {unknown}" in error_text(
                    await mcp.call_tool("get_status", {"task_id": unknown})
                )
                assert "already completed" in error_text(await mcp.call_tool("cancel_task", {"task_id": task_id}))

                worker.stop()  # the second job stays queued until cancelled
                second = content(await mcp.call_tool("generate_dataset", arguments))["task_id"]
                cancelled = content(await mcp.call_tool("cancel_task", {"task_id": second}))
                assert cancelled["task_id"] == second and cancelled["status"] == "cancelled"
                assert content(await mcp.call_tool("get_status", {"task_id": second}))["status"] == "cancelled"

    asyncio.run(run())
    logged = errlog.read_text()
    assert "Tool 'get_status' failed" in logged  # the server's log lines went to stderr, never into the protocol
