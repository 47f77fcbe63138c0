"""What a visitor's request may carry into the app.

- Files only from Gradio's upload folder. Gradio itself checks that only when the payload has a
  ``meta`` key, so a raw API call naming ``{"path": "/srv/any.jpg"}`` would otherwise be opened.
- data: URLs only after their size and their header's pixel count are checked (Gradio would decode
  them first, skipping the upload size limit).
- Images are measured from their header before anything decodes them.
- Every HTTP request body is capped (one upload request may otherwise carry any number of files).
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from pathlib import Path

from emotion.errors import InputError
from emotion.image import image_size

log = logging.getLogger(__name__)

NOT_UPLOADED = "Send the file itself (for example with gradio_client's handle_file), not a path on the server."
EXPIRED = "This upload is no longer on the server (uploads are kept for a limited time): please upload it again."


def upload_folder() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def checked_upload(path, max_bytes: int, max_pixels: int | None = None) -> str:
    """The path of a file this app received as an upload, checked; InputError for anything else."""
    if not isinstance(path, str) or not path:
        raise InputError(NOT_UPLOADED)
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        raise InputError(NOT_UPLOADED) from None
    if not resolved.is_relative_to(upload_folder()):
        log.warning("refused a file outside the upload folder")
        raise InputError(NOT_UPLOADED)
    if not resolved.is_file():
        raise InputError(EXPIRED)
    if max_pixels is None:
        if resolved.stat().st_size > max_bytes:
            raise InputError(f"The file is over the {max_bytes / 2**20:.0f} MB limit.")
    else:
        image_size(resolved, max_pixels, max_bytes)
    return str(resolved)


def data_url_to_file(url: str, max_bytes: int, max_pixels: int) -> str:
    """A base64 data: URL written to the upload folder once its size and header pass the limits."""
    head, _, body = url.partition(",")
    if ";base64" not in head:
        raise InputError("Only base64 data: URLs are accepted.")
    if len(body) > max_bytes * 4 // 3 + 4:  # checked before decoding: base64 is 4 characters per 3 bytes
        raise InputError(f"The image is over the {max_bytes / 2**20:.0f} MB limit.")
    try:
        data = base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        raise InputError("The data: URL is not valid base64.") from None
    image_size(data, max_pixels, max_bytes)
    folder = upload_folder() / "data-urls"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.img"
    path.write_bytes(data)
    return str(path)


class BodyLimit:
    """ASGI middleware: request bodies over ``max_bytes`` get 413 before they are stored anywhere."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        limit = f"{self.max_bytes / 2**20:.0f} MB"
        body = f"Request too large: the limit is {limit} per request.".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
