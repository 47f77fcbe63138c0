"""The analysis as MCP tools: the schema Gradio serves, and a real MCP client calling the tool."""

import asyncio
import base64
import json

import httpx
import pytest

from emotion.labels import LABELS
from tests.conftest import photo

mcp = pytest.importorskip("mcp")


def test_the_schema_names_the_seven_emotions_and_the_parameters(server):
    tools = {t["name"]: t for t in httpx.get(f"{server}gradio_api/mcp/schema", timeout=30).json()}
    assert {"emotions_in_photo", "analyze_photo", "analyze_photos"} <= set(tools)
    tool = tools["emotions_in_photo"]
    assert all(label in tool["description"] for label in LABELS)
    params = tool["inputSchema"]["properties"]
    assert list(params) == ["image", "backend", "model", "threshold", "token"]
    assert tool["inputSchema"]["required"] == ["image"]
    assert params["threshold"]["type"] == "number" and params["backend"]["enum"] == ["local", "remote"]
    assert all(params[name].get("description") for name in params)  # every parameter explained


async def call_analyze(url: str, image: str) -> tuple[list[str], object]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        names = [t.name for t in (await session.list_tools()).tools]
        result = await session.call_tool("emotions_in_photo", {"image": image, "threshold": 0.3})
        return names, result


def test_an_mcp_client_analyses_a_photo(server):
    data = base64.b64encode(photo("nasa_apollo11_crew.jpg").read_bytes()).decode()
    names, result = asyncio.run(call_analyze(f"{server}gradio_api/mcp/", f"data:image/jpeg;base64,{data}"))
    assert "emotions_in_photo" in names
    assert not result.isError, result.content
    [content] = result.content
    doc = json.loads(content.text)  # the tool answers with the JSON document alone
    assert len(doc["faces"]) == 3 and doc["image_size"] == [600, 471]
    assert [f["box"][0] for f in doc["faces"]] == sorted(f["box"][0] for f in doc["faces"])
    assert all(set(f["scores"]) == set(LABELS) for f in doc["faces"])



def test_a_refused_input_comes_back_as_a_tool_error(server):
    _, result = asyncio.run(call_analyze(f"{server}gradio_api/mcp/", "data:image/png;base64,bm90IGFuIGltYWdl"))
    assert result.isError and "not an image" in str(result.content)
