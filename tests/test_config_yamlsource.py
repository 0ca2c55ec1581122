"""The shared strict YAML layer: nodes with lines, typed access, FILE:LINE errors, bounded work."""

from __future__ import annotations

import datetime
import pickle
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config.yamlsource import (
    ConfigError,
    FileKind,
    FileParser,
    compose_file,
    describe,
    node_at,
    parse_text,
    plain,
    read_text,
)

DOC = """\
name: sensor
count: 12
ratio: 0.5
enabled: yes
nothing:
when: 2026-01-02
items:
  - one
  - {two: 2}
nested:
  deeper:
    - [a, b]
"""


class _Error(ConfigError):
    pass


_KIND = FileKind(error=_Error, document="a test file", expected="a test mapping")


def _entries(text: str) -> tuple[FileParser, dict[str, tuple[yaml.Node, yaml.Node]]]:
    parser = FileParser("t.yaml")
    root = parse_text(text, "t.yaml")
    keys = tuple(k.value for k, _ in root.value)
    return parser, parser.mapping(root, "the file", keys, ())


def test_plain_gives_the_same_values_as_safe_load():
    root = parse_text(DOC, "t.yaml")
    assert plain(root, "t.yaml") == yaml.safe_load(DOC)
    assert plain(root, "t.yaml")["when"] == datetime.date(2026, 1, 2)


def test_node_at_finds_keys_items_and_stops_at_the_deepest_existing_node():
    root = parse_text(DOC, "t.yaml")
    assert node_at(root, "x.items[1].two").start_mark.line + 1 == 9
    assert node_at(root, "x.nested.deeper[0][1]").value == "b"
    assert node_at(root, "x.nested.deeper[0][1]").start_mark.line + 1 == 12
    # "missing" does not exist under nested: the nested key is the closest place.
    assert node_at(root, "x.nested.missing").start_mark.line + 1 == 10
    assert node_at(root, "x") is root


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a: &x [*x]\n", 1, "nested deeper than 64 levels via aliases"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
            "e: [" + ", ".join(["*d"] * 20) + "]\n",
            None,
            "expand to more than 100000 values",
        ),
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
        ("a: 2026-13-45\n", 1, "a date (2026-13-45) is not valid"),
        ("a:\n  - !!timestamp soon\n", 2, "a date (soon) is not valid"),
        ("a: !!bool maybe\n", 1, "a boolean (maybe) is not valid"),
        ("a: !!binary aGk=\n", 1, "unsupported YAML tag tag:yaml.org,2002:binary"),
        ("? [a]\n: b\n", 1, "a mapping key must be a plain name"),
    ],
)
def test_plain_refuses_what_would_hang_or_hide_a_mistake(text: str, line: int | None, problem: str):
    root = parse_text(text, "t.yaml")
    with pytest.raises(_Error) as info:
        plain(root, "t.yaml", error=_Error)
    assert problem in info.value.problem
    if line is not None:
        assert info.value.line == line


def test_typed_accessors_refuse_lookalikes_with_the_line():
    parser, fields = _entries('a: "12"\nb: true\nc: 1.5\nd: .inf\ne: 0x10\nf: yes\n')
    with pytest.raises(ConfigError, match=r"t.yaml:1: a must be a whole number, got a string"):
        parser.integer(fields["a"], "a", 0, 100)
    with pytest.raises(ConfigError, match=r"t.yaml:2: b must be a whole number, got a boolean"):
        parser.integer(fields["b"], "b", 0, 100)
    with pytest.raises(ConfigError, match=r"t.yaml:3: c must be a whole number, got a number"):
        parser.integer(fields["c"], "c", 0, 100)
    with pytest.raises(ConfigError, match=r"t.yaml:4: d must be more than 0 and at most 10"):
        parser.number(fields["d"], "d", 0, 10)
    assert parser.integer(fields["e"], "e", 0, 100) == 16
    with pytest.raises(ConfigError, match=r"t.yaml:5: e must be 0 to 10, got 16"):
        parser.integer(fields["e"], "e", 0, 10)
    assert parser.number(fields["c"], "c", 0, 10) == 1.5
    assert parser.boolean(fields["f"], "f") is True
    with pytest.raises(ConfigError, match=r"t.yaml:1: a must be true or false, got a string"):
        parser.boolean(fields["a"], "a")


def test_unknown_key_suggests_the_closest_allowed_one():
    parser = FileParser("t.yaml")
    root = parse_text("name: x\ncoutn: 3\n", "t.yaml")
    with pytest.raises(ConfigError) as info:
        parser.mapping(root, "the file", ("name", "count"), ())
    assert str(info.value) == (
        "t.yaml:2: unknown key 'coutn' in the file; did you mean 'count'? (allowed: name, count)"
    )


def test_subclassed_parser_raises_its_own_error_type():
    class _Parser(FileParser):
        error_type = _Error

    with pytest.raises(_Error):
        _Parser("t.yaml").mapping(parse_text("- a\n", "t.yaml"), "the file", (), ())


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (b"", 1, "the file is empty; expected a test mapping"),
        (b"a: 1\n---\nb: 2\n", 2, "a test file must hold a single YAML document"),
        (b"a: [1\nb: 2\n", 2, "YAML syntax error"),
        (b"a: *x\n", 1, "undefined YAML alias *x"),
        (b"a: b\n\xff\n", 2, "not valid UTF-8"),
        (b"a: \x07\n", 1, "character U+0007 is not allowed in YAML"),
        (b"a: " + b"[" * 50 + b"]" * 50 + b"\n", 1, "nested deeper than 32 levels"),
    ],
)
def test_compose_file_reports_every_problem_as_the_kinds_error(
    tmp_path: Path, data: bytes, line: int, problem: str
):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    with pytest.raises(_Error) as info:
        compose_file(path, kind=_KIND)
    assert (info.value.file, info.value.line) == (str(path), line), str(info.value)
    assert problem in info.value.problem


def test_unreadable_and_oversized_files_have_no_line(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read") as info:
        read_text(tmp_path / "missing.yaml")
    assert info.value.line is None
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: b\n" * 100)
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        read_text(big, max_bytes=100)


def test_config_errors_survive_pickling_for_worker_processes():
    err = _Error("f.yaml", 3, "bad")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is _Error
    assert (copy.file, copy.line, copy.problem, str(copy)) == ("f.yaml", 3, "bad", "f.yaml:3: bad")
    assert str(_Error("f.yaml", None, "gone")) == "f.yaml: gone"


def test_describe_names_types_in_words():
    root = parse_text("a: x\nb: 1\nc:\nd: [1]\ne: {}\n", "t.yaml")
    assert [describe(v) for _, v in root.value] == [
        "a string",
        "a number (1)",
        "empty",
        "a list",
        "a mapping",
    ]


_BITS = st.sampled_from(
    ["", " ", "-", ":", "*", "&a", "*a", "[", "]", "{", "}", "'", '"', "#", "\n", "!!str", "~",
     "yes", "12", "1.5", "---", "?", "|", ">", "\t", "%", "<<", "!!binary", "2026-13-01", "!!int",
     "!!bool", "!!float", "!!timestamp", "0x"]
)  # fmt: skip


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, len(DOC)), st.integers(0, 4), _BITS), max_size=4))
def test_mutated_documents_only_ever_raise_config_error(edits: list[tuple[int, int, str]]):
    text = DOC
    for pos, cut, bit in edits:
        text = text[:pos] + bit + text[pos + cut :]
    try:
        plain(parse_text(text, "t.yaml"), "t.yaml")
    except ConfigError as err:
        assert err.file == "t.yaml"
        assert err.line is None or err.line >= 1
