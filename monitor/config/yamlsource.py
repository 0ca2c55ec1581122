"""Strict YAML for configuration files: nodes that remember their lines, FILE:LINE errors.

Every file this project reads from an operator (blocklists, approvals, the sensor's settings)
is safety-relevant: a typo that silently turns a setting off is a missed detection nobody
notices.  So the files are walked as a node graph (as ``yaml.compose`` builds it) rather than
turned into plain dicts that have forgotten their lines, every access checks the YAML type
instead of coercing, and every problem is raised as a :class:`ConfigError` naming the file and
line, so editors and CI logs can jump to it.

The composer here replaces ``yaml.compose`` because both stock composers recurse once per
nesting level: libyaml's segfaults and PyYAML's raises RecursionError on ``[[[[...`` input.  It
is built from the parser's event stream with an explicit stack and a nesting limit, and yields
the same nodes and marks as ``yaml.compose``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BOOL_TAG",
    "FLOAT_TAG",
    "INT_TAG",
    "MAP_TAG",
    "MAX_FILE_BYTES",
    "MAX_NESTING",
    "NULL_TAG",
    "PLAIN",
    "SEQ_TAG",
    "STR_TAG",
    "TIMESTAMP_TAG",
    "YAML_LOADER",
    "ConfigError",
    "Entry",
    "FileKind",
    "FileParser",
    "compose_file",
    "compose_text",
    "describe",
    "line_of",
    "node_at",
    "parse_text",
    "plain",
    "read_text",
    "syntax_error",
]

#: Far above any real configuration (100k blocklist indicators are ~4 MB) but stops an
#: accidental multi-GB file from being read into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024

#: Real schemas nest about five levels deep; see the module docstring for why there is a limit.
MAX_NESTING = 32

#: libyaml is ~10x faster on big files and reports the same marks; fall back if it is absent.
YAML_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
_TAG_NAMES = {
    INT_TAG: "a number",
    FLOAT_TAG: "a number",
    BOOL_TAG: "a boolean",
    NULL_TAG: "empty",
    TIMESTAMP_TAG: "a date",
    SEQ_TAG: "a list",
    MAP_TAG: "a mapping",
}

#: Scalar construction only (no object tags); stateless for scalars, so one instance is shared.
#: With an explicit tag (``!!int abc``) any text reaches these, and they fail in many ways.
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_CONSTRUCT_ERRORS = (ValueError, OverflowError, IndexError, KeyError, AttributeError, TypeError)
_TRUE = ("true", "yes", "on", "y")
_FALSE = ("false", "no", "off", "n")
_SCALAR_BUILDERS = {
    BOOL_TAG: _CONSTRUCTOR.construct_yaml_bool,
    INT_TAG: _CONSTRUCTOR.construct_yaml_int,
    FLOAT_TAG: _CONSTRUCTOR.construct_yaml_float,
    TIMESTAMP_TAG: _CONSTRUCTOR.construct_yaml_timestamp,
}

#: A mapping entry: (key node, value node).  Kept together because an error about an empty
#: value must point at the key (see ``FileParser.value_error``).
Entry = tuple[yaml.Node, yaml.Node]


class ConfigError(ValueError):
    """A configuration problem, located as FILE:LINE (or FILE: when no line applies)."""

    def __init__(self, file: str | os.PathLike[str], line: int | None, problem: str) -> None:
        self.file = os.fspath(file)
        self.line = line
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.problem}"
        return f"{self.file}:{self.line}: {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); ours take three arguments, not the message.
        return (type(self), (self.file, self.line, self.problem))


@dataclass(frozen=True, slots=True)
class FileKind:
    """What a caller's files are called in the few messages this module words itself."""

    #: The error class raised for every problem.
    error: type[ConfigError] = ConfigError
    #: Completes "... must hold a single YAML document".
    document: str = "a configuration file"
    #: Completes "the file is empty; expected ...".
    expected: str = "a mapping"
    #: Shown when an unquoted '*' was read as an alias: "..., e.g. <quote_example>".
    quote_example: str = 'name: "*.example.com"'


#: Generic wording and the base error class.
PLAIN = FileKind()


def line_of(node: yaml.Node) -> int:
    """The 1-based line a node starts on."""
    return node.start_mark.line + 1


def describe(node: yaml.Node) -> str:
    """A node's type in words, for "must be X, got Y" messages."""
    if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG:
        return "a string"
    if isinstance(node, yaml.ScalarNode) and node.tag in _TAG_NAMES:
        described = _TAG_NAMES[node.tag]
        return described if node.tag == NULL_TAG else f"{described} ({node.value})"
    return _TAG_NAMES.get(node.tag, node.tag)


# -- text and nodes ---------------------------------------------------------------------------


def read_text(
    path: str | os.PathLike[str],
    *,
    error: type[ConfigError] = ConfigError,
    max_bytes: int = MAX_FILE_BYTES,
) -> str:
    """A file's text (UTF-8, BOM allowed); unreadable, oversized or non-UTF-8 is an error."""
    file = os.fspath(path)
    try:
        with Path(file).open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(file, None, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(file, None, f"larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(file, line, "not valid UTF-8") from None


def compose_text(
    text: str,
    file: str,
    *,
    kind: FileKind = PLAIN,
    yaml_loader: type | None = None,
) -> yaml.Node | None:
    """Equivalent of ``yaml.compose`` (safe tags, same nodes and marks) with bounded nesting.

    Returns None for an empty stream.  Undefined aliases, too deep nesting and a second
    document raise ``kind.error``; YAML syntax errors propagate as ``yaml.YAMLError`` (use
    :func:`parse_text` to have those turned into ``kind.error`` too).

    Built iteratively from the parser's event stream -- libyaml's parser itself keeps an
    explicit stack, so only composition needed replacing to stop deep input crashing us.
    """
    error = kind.error
    loader = (yaml_loader or YAML_LOADER)(text)
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        anchors: dict[str, yaml.Node] = {}
        # Open collections, each with the mapping key waiting for its value (if any).
        stack: list[tuple[yaml.CollectionNode, list[yaml.Node]]] = []
        root: yaml.Node | None = None
        while root is None:
            event = loader.get_event()
            node: yaml.Node
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise error(
                        file, event.start_mark.line + 1, f"undefined YAML alias *{event.anchor}"
                    )
                node = anchors[event.anchor]
            elif isinstance(event, yaml.ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                node = yaml.ScalarNode(
                    tag, event.value, event.start_mark, event.end_mark, style=event.style
                )
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(stack) >= MAX_NESTING:
                    raise error(
                        file,
                        event.start_mark.line + 1,
                        f"YAML nested deeper than {MAX_NESTING} levels",
                    )
                node_class = (
                    yaml.SequenceNode
                    if isinstance(event, yaml.SequenceStartEvent)
                    else yaml.MappingNode
                )
                tag = event.tag
                if tag is None or tag == "!":
                    tag = loader.resolve(node_class, None, event.implicit)
                collection = node_class(
                    tag, [], event.start_mark, None, flow_style=event.flow_style
                )
                if event.anchor is not None:
                    anchors[event.anchor] = collection
                stack.append((collection, []))
                continue
            elif isinstance(event, yaml.CollectionEndEvent):
                node, _ = stack.pop()
                node.end_mark = event.end_mark
            else:  # pragma: no cover - the parser emits nothing else inside a document
                raise error(file, event.start_mark.line + 1, "unexpected YAML event")
            if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                anchors[event.anchor] = node
            if not stack:
                root = node
            else:
                parent, pending = stack[-1]
                if isinstance(parent, yaml.SequenceNode):
                    parent.value.append(node)
                elif pending:
                    parent.value.append((pending.pop(), node))
                else:
                    pending.append(node)
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise error(
                file,
                event.start_mark.line + 1,
                f"{kind.document} must hold a single YAML document",
            )
        return root
    finally:
        loader.dispose()


def syntax_error(
    file: str,
    text: str,
    exc: yaml.MarkedYAMLError,
    *,
    kind: FileKind = PLAIN,
) -> ConfigError:
    """A YAML syntax error as ``kind.error``, at the line where the problem was noticed."""
    # An unterminated construct is only noticed where the scanner gives up, possibly many
    # lines later (or past the last line), so the message also says where it started.
    last_line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    problem_line = None if exc.problem_mark is None else min(exc.problem_mark.line + 1, last_line)
    context_line = None if exc.context_mark is None else exc.context_mark.line + 1
    if "maximum nesting depth" in (exc.problem or ""):
        # PyYAML >= 6.0.4 stops deep nesting in its scanner, before the composer's own limit
        # is reached; it is the same problem, so it gets the same words.
        return kind.error(
            file, problem_line or context_line, f"YAML nested deeper than {MAX_NESTING} levels"
        )
    message = f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}"
    if exc.context and exc.problem:
        message += f" ({exc.context}"
        if context_line is not None and context_line != problem_line:
            message += f" started on line {context_line}"
        message += ")"
    if "alias" in message:
        message += f"; values starting with '*' must be quoted, e.g. {kind.quote_example}"
    return kind.error(file, problem_line or context_line, message)


def parse_text(
    text: str,
    file: str,
    *,
    kind: FileKind = PLAIN,
    yaml_loader: type | None = None,
) -> yaml.Node:
    """Compose one document; every YAML problem, and an empty file, is a ``kind.error``."""
    try:
        root = compose_text(text, file, kind=kind, yaml_loader=yaml_loader)
    except yaml.MarkedYAMLError as exc:
        raise syntax_error(file, text, exc, kind=kind) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        raise kind.error(file, line, f"character U+{code:04X} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        raise kind.error(file, None, f"YAML error: {exc}") from None
    if root is None:
        raise kind.error(file, 1, f"the file is empty; expected {kind.expected}")
    return root


def compose_file(
    path: str | os.PathLike[str],
    *,
    kind: FileKind = PLAIN,
    max_bytes: int = MAX_FILE_BYTES,
    yaml_loader: type | None = None,
) -> yaml.Node:
    """Read and compose one YAML file; any problem is a ``kind.error`` naming the file."""
    file = os.fspath(path)
    text = read_text(file, error=kind.error, max_bytes=max_bytes)
    return parse_text(text, file, kind=kind, yaml_loader=yaml_loader)


def node_at(root: yaml.Node, where: str) -> yaml.Node:
    """The node a dotted path like ``alerts.schedule.holidays[2]`` names, as far as it exists.

    For code that validates plain values (and reports a dotted path) to have its errors
    located: the first segment names ``root`` itself, a mapping step lands on the key (the line
    where the setting is named), and a missing step stops at the deepest node found.
    """
    steps: list[str | int] = []
    for part in where.split(".")[1:]:
        name, _, rest = part.partition("[")
        if name:
            steps.append(name)
        for index in re.findall(r"(\d+)\]", "[" + rest if rest else ""):
            steps.append(int(index))
    found, current = root, root
    for step in steps:
        nxt: yaml.Node | None = None
        if isinstance(step, str) and isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.value == step:
                    found, nxt = key, value
                    break
        elif (
            isinstance(step, int)
            and isinstance(current, yaml.SequenceNode)
            and step < len(current.value)
        ):
            found = nxt = current.value[step]
        if nxt is None:
            break
        current = nxt
    return found


def plain(
    node: yaml.Node,
    file: str,
    *,
    error: type[ConfigError] = ConfigError,
    max_values: int = 100_000,
) -> Any:
    """A node as plain Python (dict, list, str, int, float, bool, None, date/datetime).

    For handing a section to code that takes mappings.  Bounded: aliases can make a small file
    expand exponentially ("billion laughs") or refer to themselves, so the number of values
    and the nesting (aliases included) are capped.  Duplicate keys, collection keys and
    non-standard tags are errors, as everywhere in these files.
    """
    budget = [max_values]

    def convert(n: yaml.Node, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise error(file, line_of(n), f"YAML aliases expand to more than {max_values} values")
        if depth > 2 * MAX_NESTING:
            raise error(
                file, line_of(n), f"YAML nested deeper than {2 * MAX_NESTING} levels via aliases"
            )
        if isinstance(n, yaml.ScalarNode):
            if n.tag == STR_TAG:
                return n.value
            if n.tag == NULL_TAG:
                return None
            builder = _SCALAR_BUILDERS.get(n.tag)
            if builder is None:
                raise error(file, line_of(n), f"unsupported YAML tag {n.tag}")
            try:
                return builder(n)
            except _CONSTRUCT_ERRORS:
                raise error(file, line_of(n), f"{describe(n)} is not valid") from None
        if isinstance(n, yaml.SequenceNode) and n.tag == SEQ_TAG:
            return [convert(item, depth + 1) for item in n.value]
        if isinstance(n, yaml.MappingNode) and n.tag == MAP_TAG:
            out: dict[Any, Any] = {}
            lines: dict[Any, int] = {}
            for key, value in n.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag not in (STR_TAG, INT_TAG):
                    raise error(file, line_of(key), "a mapping key must be a plain name")
                name = convert(key, depth + 1)
                if name in out:
                    raise error(
                        file,
                        line_of(key),
                        f"duplicate key {name!r} (first on line {lines[name]})",
                    )
                lines[name] = line_of(key)
                out[name] = convert(value, depth + 1)
            return out
        raise error(file, line_of(n), f"unsupported YAML tag {n.tag}")

    return convert(node, 0)


# -- typed field access -----------------------------------------------------------------------


class FileParser:
    """Walks one composed document with strict, typed accessors; every error names FILE:LINE.

    Subclass it per file format and set ``error_type`` to the format's error class.
    """

    error_type: type[ConfigError] = ConfigError

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, node: yaml.Node | None, problem: str) -> ConfigError:
        line = None if node is None else line_of(node)
        return self.error_type(self.file, line, problem)

    def value_error(self, entry: Entry, problem: str) -> ConfigError:
        # An empty value's mark can point past the key; the key's line is where to look.
        key, value = entry
        return self.error(key if value.tag == NULL_TAG else value, problem)

    # -- structure --------------------------------------------------------------------------

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        allowed: tuple[str, ...],
        required: tuple[str, ...],
    ) -> dict[str, Entry]:
        """A mapping's entries by key; unknown (with a did-you-mean), duplicate or missing
        required keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping, got {describe(node)}")
        entries: dict[str, Entry] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != STR_TAG:
                raise self.error(key, f"{what} has a key that is not a plain name")
            name = key.value
            if name in entries:
                first = line_of(entries[name][0])
                raise self.error(key, f"duplicate key {name!r} in {what} (first on line {first})")
            if name not in allowed:
                hint = difflib.get_close_matches(name, allowed, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                raise self.error(
                    key,
                    f"unknown key {name!r} in {what}{suggestion} (allowed: {', '.join(allowed)})",
                )
            entries[name] = (key, value)
        for name in required:
            if name not in entries:
                raise self.error(node, f"{what} is missing required key {name!r}")
        return entries

    def sequence(self, entry: Entry, what: str) -> list[yaml.Node]:
        """A non-empty list's items."""
        _, value = entry
        if not isinstance(value, yaml.SequenceNode):
            raise self.value_error(
                entry, f"{what} must be a list of '- ...' items, got {describe(value)}"
            )
        if not value.value:
            raise self.value_error(entry, f"{what} must not be empty")
        return list(value.value)

    # -- scalars ----------------------------------------------------------------------------

    def string(self, entry: Entry, what: str) -> str:
        """A non-blank string; a number or boolean where a string belongs is an error."""
        _, value = entry
        if not isinstance(value, yaml.ScalarNode) or value.tag != STR_TAG:
            quote = " (quote it)" if isinstance(value, yaml.ScalarNode) else ""
            raise self.value_error(entry, f"{what} must be a string, got {describe(value)}{quote}")
        if not value.value.strip():
            raise self.value_error(entry, f"{what} must not be empty")
        return value.value

    def optional_string(self, entries: dict[str, Entry], key: str, what: str) -> str | None:
        entry = entries.get(key)
        if entry is None or entry[1].tag == NULL_TAG:
            return None
        return self.string(entry, what)

    def choice(self, entry: Entry, what: str, allowed: tuple[str, ...]) -> str:
        text = self.string(entry, what)
        if text not in allowed:
            raise self.value_error(entry, f"{what} {text!r} is not one of: {', '.join(allowed)}")
        return text

    def boolean(self, entry: Entry, what: str) -> bool:
        _, value = entry
        if not isinstance(value, yaml.ScalarNode) or value.tag != BOOL_TAG:
            raise self.value_error(entry, f"{what} must be true or false, got {describe(value)}")
        text = value.value.lower()
        if text not in _TRUE and text not in _FALSE:  # only reachable with an explicit !!bool
            raise self.value_error(entry, f"{what} must be true or false, got {value.value!r}")
        return text in _TRUE

    def integer(self, entry: Entry, what: str, low: int, high: int) -> int:
        """A YAML integer in ``low..high``; quoted numbers, floats and booleans are errors."""
        _, value = entry
        if not isinstance(value, yaml.ScalarNode) or value.tag != INT_TAG:
            raise self.value_error(entry, f"{what} must be a whole number, got {describe(value)}")
        try:
            number = int(_SCALAR_BUILDERS[INT_TAG](value))
        except _CONSTRUCT_ERRORS:
            raise self.value_error(entry, f"{what} {value.value!r} is not a number") from None
        if not low <= number <= high:
            raise self.value_error(entry, f"{what} must be {low} to {high}, got {number}")
        return number

    def number(self, entry: Entry, what: str, low: float, high: float) -> float:
        """A finite YAML number with ``low < n <= high`` (zero would mean "never" or "nothing")."""
        _, value = entry
        if not isinstance(value, yaml.ScalarNode) or value.tag not in (INT_TAG, FLOAT_TAG):
            raise self.value_error(entry, f"{what} must be a number, got {describe(value)}")
        try:
            number = float(_SCALAR_BUILDERS[value.tag](value))
        except _CONSTRUCT_ERRORS:
            raise self.value_error(entry, f"{what} {value.value!r} is not a number") from None
        if not math.isfinite(number) or not low < number <= high:
            raise self.value_error(
                entry, f"{what} must be more than {low:g} and at most {high:g}, got {value.value}"
            )
        return number
