"""Streaming read of a snapshot: JSON array (optionally gzip) -> validated COPY text chunks.

Memory stays flat: the input is read 64 KB at a time, and valid rows leave as
~1 MB chunks for COPY while only the first 100 errors are kept. The records
completed by each read are decoded at once by the standard library's C parser;
anything it does not take plainly (an error, NaN, whitespace it does not know)
goes to ijson from that point on, so every outcome is exactly ijson's.

Hostile input is stopped on the raw bytes before the parser sees them (the C
parser crashes on huge integers and slows down quadratically with nesting
depth): the decompressed size and the compression ratio are bounded, and a
scanner refuses deep nesting and overlong numbers, marks text that is not
valid UTF-8 or holds a lone surrogate so the record holding it is reported, and
counts the keys of every record so that a repeated key (which a dict silently
drops) is reported too.
"""

from __future__ import annotations

import codecs
import decimal
import gzip
import json
import re
import zlib
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate, islice
from typing import Any, Protocol

import ijson

from paysync.config import get_settings
from paysync.errors import MAX_LISTED_ERRORS, RecordError, SnapshotRejected, SnapshotTooLarge, shown
from paysync.records import (
    INVALID_TEXT,
    Entity,
    copy_row,
    copy_rows,
    duplicate_key_error,
    invalid_text_error,
)

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
COPY_CHUNK_CHARS = 1 << 20
BATCH_RECORDS = 1000
BATCH_BYTES = 256 * 1024
_WHITESPACE = b" \t\r\n"

# Records are flat (array -> object -> scalars); a little nesting is allowed for ignored fields.
MAX_DEPTH = 32
# Digits in one run of a number (integer part, fraction or exponent). Python refuses to
# convert integers of more than 4300 digits, and the C parser crashes when it does. (An
# exponent beyond Decimal's range, like 1e999999999, fails cleanly and is refused.)
MAX_NUMBER_DIGITS = 100
# The compression ratio is checked once this much has been decompressed (small files
# compress unevenly, and a bomb is caught long before it costs anything).
RATIO_CHECK_AFTER_BYTES = 1 << 20

# Bytes that are not UTF-8 become U+FFFF (a noncharacter, refused in text) so the record
# holding them is reported instead of the parser failing.
_MARK_ERRORS = "paysync-mark-invalid"
codecs.register_error(_MARK_ERRORS, lambda error: (INVALID_TEXT, error.end))
_MARKER_ESCAPE = b"\\uffff"
# Escapes that need a look: backslash pairs (to stay in step) and surrogates (a pair is
# fine, a lone one is marked).
_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)
_ESCAPED_CHAR = re.compile(rb"\\(.)", re.S)
_ESCAPE_WINDOW = 12
_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")

# Structure scan tables: keep quotes, brackets and colons; brackets become +1 / -1 steps.
_STRUCTURE = b'"[]{}:'
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
# Number scan: digits -> "0", so a long run is a plain substring search.
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
_STRING = re.compile(rb'"[^"]*(?:"|\Z)')
# The last reads kept to name a repeated key: a batch of records (about BATCH_BYTES, more when
# record sizes jump) plus the parser's read-ahead.
_RECENT_BYTES = 4 << 20
_COLON, _OPEN_BRACE, _CLOSE_BRACE, _BACKSLASH = ord(":"), ord("{"), ord("}"), ord("\\")
_OPENERS = frozenset(b"[{")

# The fast path reads what ijson reads at a time, so every read, check and failure happens at
# the same point whichever parser decodes the records.
_READ_SIZE = 64 * 1024
# An unfinished record longer than this hands the rest of the snapshot to ijson (memory stays
# flat), as does a read whose last record end is not among its last closing braces.
_MAX_PENDING = 1 << 20
_CUT_TRIES = 16
# The first byte of the record after a cut (or after the array's "["), if read already.
_NEXT_RECORD = re.compile(rb"[ \t\r\n]*(?:,[ \t\r\n]*)?([^ \t\r\n]?)")
_OBJECT_OR_END = frozenset((b"", b"{", b"]"))
# Put after a record decoded already, this stand-in puts a parser in the state it had there.
_STAND_IN = b"[{}"


class _Object(dict):  # type: ignore[type-arg]
    """A decoded JSON object that remembers the first key it repeats."""

    repeated: str | None = None


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    found = _Object(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        found.repeated = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
    return found


_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_float=Decimal)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # ijson refuses NaN and Infinity: so does the fast path


# The types ijson gives: int for whole numbers, Decimal for the others.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class MalformedInput(Exception):
    """The bytes are not a (gzip of a) JSON array; the message is safe to show and log."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one snapshot (defaults from the settings)."""

    max_bytes: int
    max_records: int
    max_compression_ratio: int
    max_depth: int = MAX_DEPTH
    max_number_digits: int = MAX_NUMBER_DIGITS

    @classmethod
    def from_settings(cls) -> Limits:
        settings = get_settings()
        return cls(
            max_bytes=settings.max_snapshot_bytes,
            max_records=settings.max_snapshot_records,
            max_compression_ratio=settings.max_compression_ratio,
        )


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


class _CountingStream:
    """Counts the bytes read through it (the compressed side of a gzip snapshot)."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


class _SizeGuard:
    """Refuses a snapshot past `max_bytes` decompressed, or a gzip expanding too much."""

    def __init__(self, stream: Readable, limits: Limits, compressed: _CountingStream | None) -> None:
        self._stream = stream
        self._limits = limits
        self._compressed = compressed
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        limits = self._limits
        if self.count > limits.max_bytes:
            raise SnapshotTooLarge(
                f"the snapshot is larger than {limits.max_bytes} bytes (uncompressed); split it or raise"
                " MAX_SNAPSHOT_BYTES"
            )
        compressed = self._compressed
        if (
            compressed is not None
            and self.count > RATIO_CHECK_AFTER_BYTES
            and self.count > compressed.count * limits.max_compression_ratio
        ):
            raise SnapshotTooLarge(
                f"the gzip snapshot expands more than {limits.max_compression_ratio} times"
                " (a decompression bomb?); it was refused"
            )
        return data


def _sniff(stream: Readable, want: int) -> bytes:
    head = b""
    while len(head) < want:
        data = stream.read(want - len(head))
        if not data:
            break
        head += data
    return head


def _open(stream: Readable, limits: Limits) -> Readable:
    head = _sniff(stream, 2)
    stream = _PrefixedStream(head, stream)
    compressed = None
    if head == GZIP_MAGIC:
        compressed = _CountingStream(stream)
        stream = gzip.GzipFile(fileobj=compressed, mode="rb")  # type: ignore[arg-type]
    stream = _SizeGuard(stream, limits, compressed)
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


def open_json_array(stream: Readable, limits: Limits | None = None) -> Readable:
    """The stream, decompressed when it is gzip, checked to start with a JSON array and
    bounded in size."""
    return _open(stream, limits or Limits.from_settings())


class _Scanner:
    """Checks the bytes on their way to the parser, at C speed (bytes methods, no per-byte loop).

    Refuses nesting deeper than `max_depth` and numbers with overlong digit runs
    (strings do not count: quote state is carried across reads). Replaces
    bytes that are not UTF-8 and escaped lone surrogates by U+FFFF and sets `marked`, so
    the records holding them are reported. Counts the keys of every record-level
    object (`key_counts`). A short tail (a split escape or UTF-8 sequence) is held
    back until the next read.
    """

    def __init__(self, stream: Readable, limits: Limits) -> None:
        self._stream = stream
        self._limits = limits
        self._held = b""
        self._eof = False
        self._depth = 0
        self._in_string = False
        self._digit_tail = 0
        self._long_digits = b"0" * (limits.max_number_digits + 1)
        self._keys = 0  # keys seen so far of the record-level object still open
        self._recent: deque[bytes] = deque()  # the last reads, to name a duplicated key
        self._recent_size = 0
        self.count = 0  # bytes passed on
        self.marked = False
        # Keys written in each record-level object, in order: a parsed record with fewer
        # keys repeated one (a dict keeps only the last value of a duplicated key).
        self.key_counts: deque[int] = deque()

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:  # the parser's probe for bytes versus text
            return b""
        while not self._eof:
            data = self._stream.read(size if size > 0 else 64 * 1024)
            if not data:
                self._eof = True
                break
            if self._held:
                data = self._held + data
            cut = _safe_cut(data)
            self._held = data[cut:]
            if cut:
                return self._check(data[:cut] if cut < len(data) else data)
        data, self._held = self._held, b""
        return self._check(data) if data else b""

    def _check(self, data: bytes) -> bytes:
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                data = data.decode("utf-8", _MARK_ERRORS).encode("utf-8")
                self.marked = True
        escaped = _escaped_chars(data)
        if b"u" in escaped:
            data = _ESCAPES.sub(self._escape, data)
        self._scan(data, unescape=b'"' in escaped or b"\\" in escaped)
        self.count += len(data)
        self._recent.append(data)
        self._recent_size += len(data)
        while self._recent_size - len(self._recent[0]) >= _RECENT_BYTES:
            self._recent_size -= len(self._recent.popleft())
        return data

    def _escape(self, match: re.Match[bytes]) -> bytes:
        if len(match.group()) == 6:  # a lone surrogate
            self.marked = True
            return _MARKER_ESCAPE
        return match.group()

    def _scan(self, data: bytes, unescape: bool) -> None:
        plain = data
        if unescape:  # escaped quotes and backslashes say nothing about structure
            plain = plain.replace(b"\\\\", b"").replace(b'\\"', b"")
        started_in_string = self._in_string
        # Quotes, brackets and colons only; adjacent quote pairs (strings holding none of
        # them) go, which keeps the quote parity before every bracket and colon.
        marks = plain.translate(None, _NOT_STRUCTURE)
        if started_in_string:
            marks = b'"' + marks
        marks = marks.replace(b'""', b"")
        if b'"' in marks:
            parts = marks.split(b'"')
            self._in_string = len(parts) % 2 == 0
            marks = b"".join(parts[0::2])
        else:
            self._in_string = False
        if marks:
            brackets = marks.translate(None, b":")
            # Empty pairs ({} of a flat record) go first: each hides a peak of at most one
            # level above what remains, so the exact walk runs only near the limit.
            short = brackets.replace(b"{}", b"").replace(b"[]", b"")
            if self._peak(short) + 1 > self._limits.max_depth and self._peak(brackets) > self._limits.max_depth:
                raise MalformedInput(
                    f"the snapshot is nested deeper than {self._limits.max_depth} levels; records are flat objects"
                )
            self._count_keys(marks, brackets)
            self._depth += brackets.count(b"[") + brackets.count(b"{") - brackets.count(b"]") - brackets.count(b"}")
        self._scan_numbers(plain, started_in_string)

    def _count_keys(self, marks: bytes, brackets: bytes) -> None:
        """Queue the key count of every record-level object closing in `marks` (structure
        outside strings: brackets and colons)."""
        depth, body = self._depth, marks
        if depth == 0 and body[:1] == b"[":
            depth, body, brackets = 1, body[1:], brackets[1:]
        end = depth + brackets.count(b"{") - brackets.count(b"}")
        if body[-1:] == b"]" and end == 1:  # the end of the array
            body, brackets = body[:-1], brackets[:-1]
        flat = (
            (depth == 1 or (depth == 2 and brackets[:1] != b"{"))
            and b"[" not in brackets
            and b"]" not in brackets
            and b"{{" not in brackets
            and b"}}" not in brackets
        )
        if not flat:  # nesting: walk it (brackets in ignored fields are rare)
            self._walk_keys(marks)
            return
        # Every "}" closes a record; the first piece continues the record open at depth 2.
        carried = self._keys if depth == 2 else 0
        pieces = body.split(b"}")
        last = pieces.pop()
        if pieces:
            counts = [piece.count(b":") for piece in pieces]
            counts[0] += carried
            self.key_counts.extend(counts)
            self._keys = last.count(b":")
        else:
            self._keys = carried + last.count(b":")

    def _walk_keys(self, marks: bytes) -> None:
        depth, keys = self._depth, self._keys
        for char in marks:
            if char == _COLON:
                keys += depth == 2
            elif char in _OPENERS:
                depth += 1
                if depth == 2:
                    keys = 0
            else:
                if depth == 2 and char == _CLOSE_BRACE:
                    self.key_counts.append(keys)
                depth -= 1
        self._keys = keys

    def duplicated_key(self, record: dict[str, Any]) -> str | None:
        """The key `record` repeats, found by decoding the last reads again (None if the
        record is not among them)."""
        text = b"".join(self._recent).decode("utf-8", "replace")
        at = len(text)
        while (at := text.rfind("{", 0, at)) >= 0:
            try:
                found, _ = _PAIRS_DECODER.raw_decode(text, at)
            except ValueError:
                continue
            if found.repeated is not None and found == record:
                return found.repeated
        return None

    def _peak(self, marks: bytes) -> int:
        """The deepest level reached along `marks` (brackets only), from the current depth."""
        return max(accumulate(array("b", marks.translate(_STEPS)), initial=self._depth))

    def _scan_numbers(self, plain: bytes, started_in_string: bool) -> None:
        digits = plain.translate(_DIGITS)
        limit = self._limits.max_number_digits
        if self._digit_tail:  # a number split by the read: its two halves together
            head = digits[: limit + 1]
            if self._digit_tail + len(head) - len(head.lstrip(b"0")) > limit:
                self._refuse_number()
        if self._long_digits in digits:
            # Maybe only strings hold the run: look again with the strings taken out.
            outside = _STRING.sub(b" ", (b'"' if started_in_string else b"") + plain)
            if self._long_digits in outside.translate(_DIGITS):
                self._refuse_number()
        trailing = len(digits) - len(digits.rstrip(b"0"))
        if self._in_string:
            self._digit_tail = 0
        elif trailing == len(digits):  # the whole read is one run of digits: it goes on
            self._digit_tail += trailing
        else:
            self._digit_tail = trailing

    def _refuse_number(self) -> None:
        raise MalformedInput(f"the snapshot holds a number with more than {self._limits.max_number_digits} digits")


class _Raising:
    """A stream whose next read raises `error` (the scanner's, once ijson has what came before)."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:  # the parser's probe for bytes versus text
            return b""
        raise self._error


def _records(scanner: _Scanner) -> Iterator[Any]:
    """The records of the array, exactly as `ijson.items(scanner, "item")` yields them.

    What the scanner has read (as much at a time as ijson reads) is cut after its last record
    that is an object, and the records before the cut are decoded with one call of the C
    parser of the standard library: each record is yielded after the same read as with
    ijson. Whatever this does not take plainly (a block the C parser refuses, a failed read,
    a record that is not an object, an unfinished record too long, a cut not found) goes to
    ijson from there on, with what was read after the last cut, so messages and counts stay
    ijson's.
    """
    pending = b""  # read but not decoded: the start of the array, then what follows a cut
    started = False  # a cut was made (`pending` follows a record)
    while True:
        try:
            data = scanner.read(_READ_SIZE)
        except Exception as exc:  # ijson reads what came before, then fails the same way
            yield from _ijson_records(pending, started, _Raising(exc))
            return
        if not data:
            if not started or pending.strip(_WHITESPACE) != b"]":
                yield from _ijson_records(pending, started, scanner)
            return
        pending += data
        cut = _record_end(pending, scanner._depth, scanner._in_string)
        if cut:
            block = pending[:cut]
            try:
                text = (_STAND_IN + block if started else block).decode("utf-8") + "]"
                records, end = _DECODER.raw_decode(text)
                if end != len(text):
                    raise ValueError("not one array")
            except Exception:
                yield from _ijson_records(pending, started, scanner)
                return
            pending = pending[cut:]
            if started:
                del records[0]
            started = True
            yield from records
        # ijson would yield a record that is not an object (or fail on what follows the cut)
        # before the next read: it takes over here, as for an unfinished record too long.
        following = _NEXT_RECORD.match(pending, 0 if started else 1)
        if cut is None or len(pending) > _MAX_PENDING or following is None or following[1] not in _OBJECT_OR_END:
            yield from _ijson_records(pending, started, scanner)
            return


def _ijson_records(pending: bytes, started: bool, rest: Readable) -> Iterator[Any]:
    """ijson's records from `pending` on, then from `rest`. After a cut, a stand-in record
    leads: the parser is then in the state it had after the record before the cut."""
    items = ijson.items(_PrefixedStream(_STAND_IN + pending if started else pending, rest), "item")
    if started:
        next(items)  # the stand-in
    yield from items


def _record_end(data: bytes, depth: int, in_string: bool) -> int | None:
    """Where the last record of `data` that is an object ends (just after its closing brace),
    found from the end of `data`, whose nesting `depth` and string state the scanner knows.
    0 if no record ends in `data`; None if the end is not among the last closing braces."""
    at = len(data)
    for _ in range(_CUT_TRIES):
        at = data.rfind(b"}", 0, at)
        if at < 0:
            return 0
        after = data[at + 1 :]
        if b"\\" in after:  # escaped quotes and backslashes say nothing about structure
            after = after.replace(b"\\\\", b"").replace(b'\\"', b"")
        marks = after.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
        if (marks.count(b'"') % 2 == 1) != in_string:  # inside a string: look before it
            opening = data.rfind(b'"', 0, at)
            if opening > 0 and data[opening - 1] != _BACKSLASH:
                at = opening
            continue
        outside = b"".join(marks.split(b'"')[0::2])
        opened = outside.count(b"[") + outside.count(b"{") - outside.count(b"]") - outside.count(b"}")
        if depth - opened == 1:
            return at + 1
    return None


def _escaped_chars(data: bytes) -> set[bytes]:
    """The characters that follow a backslash in `data`."""
    return set(_ESCAPED_CHAR.findall(data)) if b"\\" in data else set()


def _safe_cut(data: bytes) -> int:
    """Where `data` can be split so that no escape sequence, surrogate pair or UTF-8
    sequence is cut in two."""
    cut = len(data)
    first = data.find(b"\\", max(0, cut - _ESCAPE_WINDOW))
    if first >= 0:
        cut = _escape_start(data, first)
        if _HIGH_SURROGATE.fullmatch(data, max(0, cut - 6), cut) and _escape_start(data, cut - 6) == cut - 6:
            cut -= 6  # the first half of a surrogate pair waits for its second half
    for back in range(1, min(4, cut) + 1):
        byte = data[cut - back]
        if byte < 0x80:
            break
        if byte >= 0xC0:
            if (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4) > back:
                cut -= back
            break
    return cut


def _escape_start(data: bytes, at: int) -> int:
    """The start of the escape sequence holding the backslash at `at` (runs pair up from the left)."""
    run_start = len(data[:at].rstrip(b"\\"))
    return run_start + (at - run_start) // 2 * 2


def _describe(exc: Exception) -> str:
    # yajl's messages quote the input around the error (PHI): keep only the first line.
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first_line = (str(text).splitlines() or [""])[0]
    return "invalid JSON: " + (shown(first_line.strip()) or "")


class SnapshotReader:
    """Reads one snapshot: yields COPY chunks of valid rows and counts what it saw.

    The chunk iterator never raises (an exception inside COPY would break the
    connection's protocol state); problems are kept in `malformed` / `failure`
    and checked by the caller once COPY has finished. `failure` is re-raised by
    the caller: a transient I/O error, or a SnapshotRejected such as a snapshot
    too large to read.
    """

    def __init__(self, entity: Entity, stream: Readable, limits: Limits | None = None) -> None:
        self.entity = entity
        self.stream = stream
        self.limits = limits or Limits.from_settings()
        self.received = 0
        self.invalid_count = 0
        self.errors: list[RecordError] = []
        self.malformed: str | None = None
        self.failure: BaseException | None = None

    def copy_chunks(self, chunk_chars: int = COPY_CHUNK_CHARS) -> Iterator[str]:
        """COPY text for the valid records, in chunks of about `chunk_chars` characters."""
        lines: list[str] = []
        size = 0
        max_records = self.limits.max_records
        # Records go in batches, rendered column by column. A batch is at most a fraction of a
        # chunk, so chunks stay near `chunk_chars`, and spans about BATCH_BYTES of input (sized
        # from the last one), so its records are still among the scanner's recent bytes.
        most = batch_size = max(1, min(BATCH_RECORDS, chunk_chars // 64))
        received = 0
        try:
            scanner = _Scanner(_open(self.stream, self.limits), self.limits)
            items = _records(scanner)
            while True:
                start = scanner.count
                batch: list[Any] = []
                problem: Exception | None = None
                try:
                    batch.extend(islice(items, batch_size))  # keeps the records before a parse error
                except Exception as exc:
                    problem = exc
                if received + len(batch) > max_records:
                    del batch[max_records - received :]
                    problem = SnapshotTooLarge(
                        f"the snapshot holds more than {max_records} records; split it or raise MAX_SNAPSHOT_RECORDS"
                    )
                rows = self._batch_rows(scanner, received, batch)
                received += len(batch)
                lines += rows
                size += sum(map(len, rows))
                if problem is not None:
                    raise problem
                if len(batch) < batch_size:
                    break
                fitting = len(batch) * BATCH_BYTES // max(1, scanner.count - start)
                batch_size = max(1, min(most, 2 * batch_size, fitting))
                if size >= chunk_chars:
                    self.received = received
                    yield "".join(lines)
                    lines, size = [], 0
        except MalformedInput as exc:
            self.malformed = str(exc)
        except ijson.JSONError as exc:
            self.malformed = _describe(exc)
        except (gzip.BadGzipFile, EOFError, zlib.error):
            self.malformed = "invalid gzip data"
        except decimal.DecimalException:
            self.malformed = "the snapshot holds a number out of range (its exponent is too large)"
        except UnicodeError:  # the scanner marks bad text first; kept as a safety net
            self.malformed = "the snapshot holds text that is not valid UTF-8"
        except SnapshotRejected as exc:
            self.failure = exc
        except Exception as exc:  # transient I/O problems; re-raised by the caller after COPY
            self.failure = exc
        self.received = received
        if lines:
            yield "".join(lines)

    def _batch_rows(self, scanner: _Scanner, start: int, batch: list[Any]) -> list[str]:
        """The COPY lines of the valid records of `batch` (indexes from `start`); errors are kept."""
        key_counts = scanner.key_counts
        if not scanner.marked and len(key_counts) >= len(batch):
            rows = copy_rows(self.entity, start, batch)
            # A dict keeps one value of a repeated key: fewer keys than written is a duplicate.
            if rows is not None and list(map(len, batch)) == list(islice(key_counts, len(batch))):
                for _ in batch:
                    key_counts.popleft()
                return rows
        rows = []
        for index, record in enumerate(batch, start):
            row = copy_row(self.entity, index, record)
            if type(record) is dict and key_counts and len(record) < key_counts.popleft():
                named = len(self.errors) < MAX_LISTED_ERRORS  # only listed errors show the key
                row = duplicate_key_error(index, record, scanner.duplicated_key(record) if named else None)
            if scanner.marked and type(row) is str:
                row = invalid_text_error(index, record) or row
            if type(row) is str:
                rows.append(row)
            else:
                self._add_error(row)
        return rows

    def _add_error(self, error: RecordError) -> None:
        self.invalid_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(error)
