"""Streaming read of a snapshot: JSON array (optionally gzip) -> validated COPY text chunks.

Memory stays flat: ijson parses incrementally, and valid rows leave as ~1 MB
chunks for COPY while only the first 100 errors are kept.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import Protocol

import ijson

from paysync.errors import MAX_LISTED_ERRORS, RecordError
from paysync.records import Entity, copy_row

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
COPY_CHUNK_CHARS = 1 << 20
_WHITESPACE = b" \t\r\n"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class MalformedInput(Exception):
    """The bytes are not a (gzip of a) JSON array; the message is safe to show and log."""


class _PrefixedStream:
    """A byte stream whose first bytes were already read (to sniff the format)."""

    def __init__(self, prefix: bytes, rest: Readable) -> None:
        self._prefix = prefix
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                data, self._prefix = self._prefix, b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._rest.read(size)


def _sniff(stream: Readable, want: int) -> bytes:
    head = b""
    while len(head) < want:
        data = stream.read(want - len(head))
        if not data:
            break
        head += data
    return head


def open_json_array(stream: Readable) -> Readable:
    """The stream, decompressed when it is gzip, checked to start with a JSON array."""
    head = _sniff(stream, 2)
    stream = _PrefixedStream(head, stream)
    if head == GZIP_MAGIC:
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[arg-type]
    head = _sniff(stream, 3).removeprefix(UTF8_BOM)
    while not head.lstrip(_WHITESPACE):  # whitespace before the array can be dropped
        head = _sniff(stream, 64 * 1024)
        if not head:
            break
    stripped = head.lstrip(_WHITESPACE)
    if not stripped:
        raise MalformedInput("the snapshot is empty; expected a JSON array")
    if not stripped.startswith(b"["):
        raise MalformedInput("the snapshot must be a JSON array of records")
    return _PrefixedStream(stripped, stream)


def _describe(exc: Exception) -> str:
    # yajl's messages quote the input around the error (PHI): keep only the first line.
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "invalid JSON: " + str(text).splitlines()[0].strip()


class SnapshotReader:
    """Reads one snapshot: yields COPY chunks of valid rows and counts what it saw.

    The chunk iterator never raises (an exception inside COPY would break the
    connection's protocol state); problems are kept in `malformed` / `failure`
    and checked by the caller once COPY has finished.
    """

    def __init__(self, entity: Entity, stream: Readable) -> None:
        self.entity = entity
        self.stream = stream
        self.received = 0
        self.invalid_count = 0
        self.errors: list[RecordError] = []
        self.malformed: str | None = None
        self.failure: BaseException | None = None

    def copy_chunks(self, chunk_chars: int = COPY_CHUNK_CHARS) -> Iterator[str]:
        """COPY text for the valid records, in chunks of about `chunk_chars` characters."""
        lines: list[str] = []
        size = 0
        try:
            for index, record in enumerate(ijson.items(open_json_array(self.stream), "item")):
                row = copy_row(self.entity, index, record)
                self.received = index + 1
                if isinstance(row, RecordError):
                    self._add_error(row)
                    continue
                lines.append(row)
                size += len(row)
                if size >= chunk_chars:
                    yield "".join(lines)
                    lines, size = [], 0
        except MalformedInput as exc:
            self.malformed = str(exc)
        except ijson.JSONError as exc:
            self.malformed = _describe(exc)
        except (gzip.BadGzipFile, EOFError, zlib.error):
            self.malformed = "invalid gzip data"
        except Exception as exc:  # transient I/O problems; re-raised by the caller after COPY
            self.failure = exc
        if lines:
            yield "".join(lines)

    def _add_error(self, error: RecordError) -> None:
        self.invalid_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(error)
