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
    assert {"emotions_in_photo", "emotions_in_video", "analyze_photo", "analyze_photos", "analyze_video"} <= set(tools)
    assert all(label in tools["emotions_in_video"]["description"] for label in LABELS)
    tool = tools["emotions_in_photo"]
    assert all(label in tool["description"] for label in LABELS)
    params = tool["inputSchema"]["properties"]
    assert list(params) == ["image", "backend", "model", "threshold", "token"]
    assert tool["inputSchema"]["required"] == ["image"]
    assert params["threshold"]["type"] == "number" and params["backend"]["enum"] == ["local", "remote"]
    assert all(params[name].get("description") for name in params)  # every parameter explained


async def call_tool(url: str, tool: str, arguments: dict) -> tuple[list[str], object]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        names = [t.name for t in (await session.list_tools()).tools]
        result = await session.call_tool(tool, arguments)
        return names, result


def test_an_mcp_client_analyses_a_photo(server):
    data = base64.b64encode(photo("nasa_apollo11_crew.jpg").read_bytes()).decode()
    image = f"data:image/jpeg;base64,{data}"
    names, result = asyncio.run(call_tool(f"{server}gradio_api/mcp/", "emotions_in_photo", {"image": image}))
    assert "emotions_in_photo" in names
    assert not result.isError, result.content
    [content] = result.content
    doc = json.loads(content.text)  # the tool answers with the JSON document alone
    assert len(doc["faces"]) == 3 and doc["image_size"] == [600, 471]
    assert [f["box"][0] for f in doc["faces"]] == sorted(f["box"][0] for f in doc["faces"])
    assert all(set(f["scores"]) == set(LABELS) for f in doc["faces"])


def test_a_refused_input_comes_back_as_a_tool_error(server):
    bad = {"image": "data:image/png;base64,bm90IGFuIGltYWdl"}
    _, result = asyncio.run(call_tool(f"{server}gradio_api/mcp/", "emotions_in_photo", bad))
    assert result.isError and "not an image" in str(result.content)


def test_an_mcp_client_follows_faces_through_a_video(server, tmp_path):
    from emotion.video import pan_clip

    clip = pan_clip(photo("nasa_apollo11_crew.jpg"), tmp_path / "crew.mp4", seconds=2)
    video = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    _, result = asyncio.run(call_tool(f"{server}gradio_api/mcp/", "emotions_in_video", {"video": video}))
    assert not result.isError, result.content
    doc = json.loads(result.content[0].text)
    assert [t["id"] for t in doc["tracks"]] == [1, 2, 3]
    assert all(set(t["summary"]["share"]) == set(LABELS) for t in doc["tracks"])
