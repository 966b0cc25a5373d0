"""Large webhook bodies on disk: Cog inlines file outputs as `data:` URIs (a video is megabytes of base64).

The body is streamed to a file (never held whole in memory), then each `data:…;base64,` string is decoded chunk by
chunk into a file of its own and replaced by that file's `file://` URI, leaving a small JSON document to parse.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import secrets
import time
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_MARKER = b'"data:'
_B64_QUANTUM = 4


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")
        self.limit = limit


def extract_data_uris(source: Path, out_dir: Path) -> Any:
    """The JSON in `source` with every base64 `data:` URI string written to a file in `out_dir` as a `file://` URI."""
    out_dir.mkdir(parents=True, exist_ok=True)
    small = bytearray()
    with source.open("rb") as handle:
        pending = b""
        while True:
            chunk = handle.read(_CHUNK)
            data = pending + chunk
            pending = b""
            start = 0
            while True:
                at = data.find(_MARKER, start)
                if at < 0 or (at > 0 and data[at - 1 : at] == b"\\"):
                    if at < 0:
                        # the marker may straddle two chunks: keep the tail for the next round
                        cut = max(start, len(data) - (len(_MARKER) - 1)) if chunk else len(data)
                        small += data[start:cut]
                        pending = data[cut:]
                        break
                    small += data[start : at + 1]
                    start = at + 1
                    continue
                small += data[start:at]
                header_end = data.find(b",", at)
                while header_end < 0 and (more := handle.read(_CHUNK)):
                    data += more
                    header_end = data.find(b",", at)
                header = data[at + 1 : header_end].decode("ascii", errors="replace").replace("\\", "")
                if not header.endswith(";base64"):
                    small += data[at : header_end + 1]  # a percent-encoded data: URI: small, left as is
                    start = header_end + 1
                    continue
                target, data, start = _decode_to_file(handle, data, header_end + 1, header, out_dir)
                small += json.dumps(target.as_uri()).encode()
            if not chunk:
                small += pending
                break
    return json.loads(bytes(small))


def _decode_to_file(handle: Any, data: bytes, start: int, header: str, out_dir: Path) -> tuple[Path, bytes, int]:
    """Decode base64 from `data[start:]` (reading on from `handle`) up to the closing quote into a new file."""
    mime = header.removeprefix("data:").split(";", 1)[0]
    target = out_dir / f"{secrets.token_hex(8)}{mimetypes.guess_extension(mime) or '.bin'}"
    carry = b""
    with target.open("wb") as out:
        while True:
            end = data.find(b'"', start)
            piece = data[start : end if end >= 0 else len(data)].replace(b"\\", b"")  # `\/` escapes, if any
            piece = carry + piece
            usable = len(piece) - len(piece) % _B64_QUANTUM if end < 0 else len(piece)
            out.write(base64.b64decode(piece[:usable]))
            carry = piece[usable:]
            if end >= 0:
                return target, data, end + 1
            data, start = handle.read(_CHUNK), 0
            if not data:
                raise ValueError("unterminated data: URI")


def remove_stale_files(directory: Path, older_than_seconds: float) -> int:
    """Delete spooled files nobody took (e.g. the result of a prediction whose generation was cancelled)."""
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than_seconds
    removed = 0
    for path in directory.rglob("*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue  # taken by ingest meanwhile
    return removed
