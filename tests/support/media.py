"""Hand-made media for tests."""

from __future__ import annotations

import io

import av


def zero_frame_mp4() -> bytes:
    """A valid mp4 container closed before any frame was written."""
    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="mp4")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()
    return buffer.getvalue()
