"""A backup file as an HTTP download (the API's and the web app's): streamed, never cached."""

from __future__ import annotations

from starlette.responses import StreamingResponse

from smartstart.pg.backupfile import Opened


def download_response(opened: Opened) -> StreamingResponse:
    """The open file, streamed from its descriptor in a worker thread, as an attachment.

    The name is a listed backup's (letters, digits, `._-`): safe inside the quotes."""
    headers = {
        "Content-Length": str(opened.size),
        "Content-Disposition": f'attachment; filename="{opened.filename}"',
        "Cache-Control": "no-store",
    }
    if opened.sha256:
        headers["X-Backup-SHA256"] = opened.sha256
    return StreamingResponse(opened.chunks(), media_type=opened.media_type, headers=headers)
