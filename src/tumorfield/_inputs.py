"""The one reader of every user-named text input: run configs, sweep files and their base, fit files,
fit data (CSV) and a sweep's manifest.

:func:`read_text` reads regular files only: the path is ``stat``-ed first (a directory, FIFO,
device or socket is refused without being opened), then opened with ``O_NONBLOCK`` (a file
swapped for a FIFO in between cannot block the open) and checked again with ``fstat``. It reads
at most ``limit`` bytes (:data:`TOML_BYTES` for TOML, :data:`CSV_BYTES` for CSV), so a file that
grows while it is read cannot make it read more, and decodes strict UTF-8 (a CSV may start with a
byte-order mark); NUL bytes are refused. :func:`parse_toml` parses with :mod:`tomllib` and refuses
documents nested deeper than :data:`TOML_DEPTH` (and the parser's own ``RecursionError``). Every
refusal is a :class:`~tumorfield._schema.ConfigError` (exit 2, one line) naming the file, the key
that named it and the rule.
"""

from __future__ import annotations

import io
import os
import stat
import tomllib
from typing import Any

from ._schema import LIMITS, ConfigError

TOML_BYTES = LIMITS["config_bytes"]
"""Largest TOML input (run config, sweep file and base, fit file): 1 MiB."""
CSV_BYTES = LIMITS["csv_bytes"]
"""Largest CSV input (fit data, a sweep's manifest): 64 MiB."""
TOML_DEPTH = 32
"""Deepest nesting of tables and arrays in a TOML input (a configuration needs about 5)."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_text(
    path: str | os.PathLike,
    *,
    key: str = "(file)",
    named_in: str | None = None,
    limit: int = TOML_BYTES,
    what: str = "a TOML file",
    bom: bool = False,
) -> str:
    """The UTF-8 text of the regular file ``path`` of at most ``limit`` bytes.

    ``key`` is what named the path (``"(file)"`` for a file named on the command line,
    ``"sweep.base"``, ``"fit.data"``, …) and ``named_in`` the file that holds that key (default:
    ``path`` itself); ``what`` says what the file should be, in refusals; ``bom``: a UTF-8
    byte-order mark at the start is dropped (CSV from spreadsheets)."""
    name = os.fspath(path)

    def refuse(rule: str) -> ConfigError:
        return ConfigError(key, name, rule, named_in or name)

    try:
        st = os.stat(name)
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        raise refuse(f"cannot be read: {getattr(error, 'strerror', None) or error}") from None
    if not stat.S_ISREG(st.st_mode):
        raise refuse(f"is {_kind(st.st_mode)}; it must be a regular file ({what})")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(name, flags)
    except OSError as error:
        raise refuse(f"cannot be read: {error.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between stat and open
            raise refuse(f"is {_kind(st.st_mode)}; it must be a regular file ({what})")
        too_large = refuse(f"is larger than {limit // 1024} KiB, the limit for {what}")
        if st.st_size > limit:
            raise too_large
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise refuse(f"cannot be read: {error.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:  # grew while being read
        raise too_large
    data = b"".join(chunks)
    if bom and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise refuse(f"is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); it must be "
                     f"{what}") from None  # fmt: skip
    if "\0" in text:
        raise refuse(f"contains NUL bytes: a binary file, not {what}")
    return text


def _depth(document: Any) -> int:
    """How deeply tables and arrays nest in ``document`` (no recursion: a dotted key can nest deeply)."""
    deepest, stack = 0, [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth + 1)
            if deepest > TOML_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` with every failure (syntax, nesting deeper than :data:`TOML_DEPTH`) a
    :class:`ConfigError` of key ``(TOML syntax)`` (the caller adds the file with ``in_file``)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("(TOML syntax)", None, str(error)) from None
    except RecursionError:
        raise ConfigError("(TOML syntax)", None, f"arrays or tables nested too deeply (at most {TOML_DEPTH} "
                          f"levels)") from None  # fmt: skip
    if _depth(document) > TOML_DEPTH:
        raise ConfigError("(TOML syntax)", None, f"arrays or tables nested too deeply (at most {TOML_DEPTH} levels)")
    return document


def read_toml(path: str | os.PathLike, *, key: str = "(file)", named_in: str | None = None) -> dict[str, Any]:
    """The TOML document of the file ``path`` (:func:`read_text`, then :func:`parse_toml`)."""
    return _parsed(path, key, named_in)[1]


def read_toml_text(path: str | os.PathLike, *, key: str = "(file)", named_in: str | None = None) -> str:
    """The text of the TOML file ``path``, after checking that it parses (:func:`read_toml`)."""
    return _parsed(path, key, named_in)[0]


def _parsed(path, key: str, named_in: str | None) -> tuple[str, dict[str, Any]]:
    text = read_text(path, key=key, named_in=named_in)
    try:
        return text, parse_toml(text)
    except ConfigError as error:
        if named_in is None:
            raise error.in_file(os.fspath(path)) from None
        raise ConfigError(key, os.fspath(path), f"is not a valid TOML file ({error.allowed})", named_in) from None


def open_text(
    path: str | os.PathLike, *, key: str = "(file)", named_in: str | None = None, limit: int = CSV_BYTES
) -> io.StringIO:
    """The text of the CSV file ``path`` (:func:`read_text`, at most ``limit`` bytes, a byte-order
    mark dropped) as a file object for :mod:`csv` (lines untranslated, as ``open(newline="")``)."""
    text = read_text(path, key=key, named_in=named_in, limit=limit, what="a CSV file", bom=True)
    return io.StringIO(text, newline="")
