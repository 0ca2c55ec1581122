"""Loading and validating blocklist files: every error names FILE:LINE of the culprit."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.blocklist import loader
from monitor.blocklist.loader import (
    BlocklistError,
    check_paths,
    load_blocklist,
    load_blocklists,
    shipped_blocklist_dir,
)

# Line numbers are part of the tests below; keep this text's lines stable.
VALID = """\
list: test
version: "2026.01.01"
description: a list for tests
vendors:
  - id: acme
    name: Acme Face Search
    category: face-search
    severity: high
    references:
      - https://acme.example/
    notes: made up
    indicators:
      - domain: acme.example
      - host: api.cloud.example
        shared: true
        severity: low
      - wildcard: "*.cdn.acme.example"
      - cidr: 192.0.2.0/24
"""


def write(tmp_path: Path, text: str, name: str = "list.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edited(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


def test_valid_file_loads_with_every_field(tmp_path: Path):
    path = write(tmp_path, VALID)
    blocklist = load_blocklist(path)
    assert (blocklist.name, blocklist.version, blocklist.description) == (
        "test",
        "2026.01.01",
        "a list for tests",
    )
    assert blocklist.path == str(path)
    (vendor,) = blocklist.vendors
    assert vendor.id == "acme"
    assert vendor.references == ("https://acme.example/",)
    assert vendor.notes == "made up"
    kinds = [(i.kind, i.value, i.line, i.severity, i.shared) for i in blocklist.indicators]
    assert kinds == [
        ("domain", "acme.example", 13, "high", False),
        ("host", "api.cloud.example", 14, "low", True),
        ("wildcard", "*.cdn.acme.example", 17, "high", False),
        ("cidr", "192.0.2.0/24", 18, "high", False),
    ]
    assert all(
        i.list_name == "test" and i.list_version == "2026.01.01" for i in blocklist.indicators
    )
    assert all(i.file == str(path) for i in blocklist.indicators)


def test_optional_fields_may_be_left_out_or_empty(tmp_path: Path):
    text = edited("description: a list for tests\n", "").replace(
        "    notes: made up\n", "    notes:\n"
    )
    blocklist = load_blocklist(write(tmp_path, text))
    assert blocklist.description is None
    assert blocklist.vendors[0].notes is None


# (edit applied to VALID, expected line, words the problem must contain)
BROKEN: list[tuple[str, tuple[str, str], int, str]] = [
    (
        "unknown_key_typo",
        ("      - domain: acme.example", "      - domian: acme.example"),
        13,
        "unknown key 'domian' in indicator; did you mean 'domain'?",
    ),
    (
        "missing_vendor_key",
        ("    severity: high\n", ""),
        5,
        "vendor is missing required key 'severity'",
    ),
    (
        "missing_top_key",
        ('version: "2026.01.01"\n', ""),
        1,
        "the blocklist is missing required key 'version'",
    ),
    (
        "unquoted_number_version",
        ('version: "2026.01.01"', "version: 2026.01"),
        2,
        "version must be a string, got a number (2026.01) (quote it)",
    ),
    ("unquoted_date_version", ('version: "2026.01.01"', "version: 2026-01-01"), 2, "quote it"),
    (
        "bad_vendor_severity",
        ("    severity: high", "    severity: severe"),
        8,
        "severity 'severe' is not one of: low, medium, high, critical",
    ),
    (
        "bad_indicator_severity",
        ("        severity: low", "        severity: LOW"),
        16,
        "severity 'LOW' is not one of",
    ),
    ("bad_category", ("category: face-search", "category: face"), 7, "category 'face'"),
    (
        "url_instead_of_domain",
        ("domain: acme.example", "domain: https://acme.example/"),
        13,
        "invalid domain 'https://acme.example/': looks like a URL",
    ),
    (
        "single_label_domain",
        ("domain: acme.example", "domain: example"),
        13,
        "whole top-level domain",
    ),
    ("ip_as_host", ("host: api.cloud.example", "host: 192.0.2.7"), 14, "use 'cidr:'"),
    (
        "cidr_host_bits",
        ("cidr: 192.0.2.0/24", "cidr: 192.0.2.1/24"),
        18,
        "host bits are set; did you mean 192.0.2.0/24?",
    ),
    ("cidr_garbage", ("cidr: 192.0.2.0/24", "cidr: 192.0.2.0/33"), 18, "invalid cidr"),
    (
        "star_in_middle",
        ('"*.cdn.acme.example"', '"cdn.*.acme.example"'),
        17,
        "'*' is only allowed in the leftmost label",
    ),
    ("wildcard_without_star", ('"*.cdn.acme.example"', '"cdn.acme.example"'), 17, "has no '*'"),
    ("wildcard_on_tld", ('"*.cdn.acme.example"', '"*.com"'), 17, "whole top-level domain"),
    (
        "empty_indicators",
        (VALID[VALID.index("    indicators:") :], "    indicators: []\n"),
        12,
        "indicators must not be empty",
    ),
    (
        "empty_vendors",
        (VALID[VALID.index("vendors:") :], "vendors:\n"),
        4,
        "vendors must be a list of '- ...' items, got empty",
    ),
    (
        "two_kinds_in_one_item",
        (
            "      - domain: acme.example",
            "      - domain: acme.example\n        host: a.acme.example",
        ),
        13,
        "exactly one of domain/host/wildcard/cidr/ja4 (got domain and host)",
    ),
    (
        "no_kind_in_item",
        ("      - domain: acme.example", "      - note: forgot the domain"),
        13,
        "exactly one of domain/host/wildcard/cidr/ja4 (got none)",
    ),
    (
        "bare_string_item",
        ("      - domain: acme.example", "      - acme.example"),
        13,
        "must say what it is, e.g. '- domain: acme.example'",
    ),
    (
        "duplicate_key",
        ("    notes: made up", "    notes: made up\n    notes: again"),
        12,
        "duplicate key 'notes' in vendor (first on line 11)",
    ),
    ("shared_not_bool", ("shared: true", "shared: maybe"), 15, "shared must be true or false"),
    (
        "bad_reference",
        ("      - https://acme.example/", "      - acme.example"),
        10,
        "not an http(s) URL",
    ),
    (
        "reference_with_broken_ipv6_host",
        ("      - https://acme.example/", "      - https://[acme/"),
        10,
        "not an http(s) URL",
    ),
    (
        "references_not_list",
        ("    references:\n      - https://acme.example/", "    references: https://acme.example/"),
        9,
        "references must be a list",
    ),
    ("bad_vendor_id", ("  - id: acme", "  - id: Acme_Corp"), 5, "vendor id 'Acme_Corp' must match"),
    ("bad_list_name", ("list: test", "list: Test List"), 1, "list name 'Test List' must match"),
    (
        "bool_looking_list_name",
        ("list: test", "list: no"),
        1,
        "list must be a string, got a boolean (no) (quote it)",
    ),
    ("label_with_bad_char", ("domain: acme.example", "domain: acme!.example"), 13, "label 'acme!'"),
]


@pytest.mark.parametrize(
    ("edit", "line", "problem"),
    [pytest.param(edit, line, problem, id=case) for case, edit, line, problem in BROKEN],
)
def test_broken_file_error_names_file_and_line(
    tmp_path: Path, edit: tuple[str, str], line: int, problem: str
):
    path = write(tmp_path, edited(*edit))
    with pytest.raises(BlocklistError) as info:
        load_blocklist(path)
    err = info.value
    assert (err.file, err.line) == (str(path), line), str(err)
    assert problem in err.problem
    assert str(err) == f"{path}:{line}: {err.problem}"
    assert isinstance(err, ValueError)


def test_duplicate_vendor_id_points_at_the_second_definition(tmp_path: Path):
    second_vendor = VALID[VALID.index("  - id: acme") :]
    path = write(tmp_path, VALID + second_vendor.replace("acme.example", "other.example"))
    with pytest.raises(BlocklistError) as info:
        load_blocklist(path)
    assert info.value.line == 19
    assert info.value.problem == "duplicate vendor id 'acme' (first on line 5)"


def test_duplicate_indicator_points_at_the_repeat_even_across_vendors(tmp_path: Path):
    second_vendor = VALID[VALID.index("  - id: acme") :].replace("id: acme", "id: other", 1)
    second_vendor = second_vendor.replace("domain: acme.example", "domain: ACME.example.")
    path = write(tmp_path, VALID + second_vendor)
    with pytest.raises(BlocklistError) as info:
        load_blocklist(path)
    assert info.value.line == 27
    assert info.value.problem == "duplicate indicator domain acme.example (first on line 13)"


@pytest.mark.parametrize("yaml_loader", [yaml.SafeLoader, getattr(yaml, "CSafeLoader", None)])
@pytest.mark.parametrize(
    ("edit", "line", "problem"),
    [
        (('"*.cdn.acme.example"', "*.cdn.acme.example"), 17, "must be quoted"),
        (
            ("description: a list for tests", "description: 'a list for tests"),
            18,
            "started on line 3",
        ),
        (("    name: Acme Face Search", "   name: Acme Face Search"), 6, "YAML syntax error"),
        (
            ("      - domain: acme.example", "      - domain: [acme.example"),
            14,
            "YAML syntax error",
        ),
    ],
)
def test_yaml_syntax_errors_carry_the_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    yaml_loader: type | None,
    edit: tuple[str, str],
    line: int,
    problem: str,
):
    if yaml_loader is None:
        pytest.skip("libyaml not available")
    monkeypatch.setattr(loader, "_YAML_LOADER", yaml_loader)
    path = write(tmp_path, edited(*edit))
    with pytest.raises(BlocklistError) as info:
        load_blocklist(path)
    assert info.value.line == line, str(info.value)
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (b"", 1, "the file is empty"),
        (b"# only a comment\n", 1, "the file is empty"),
        (b"- list: x\n", 1, "the blocklist must be a mapping, got a list"),
        (b"list: x\nversion: '1'\nvendors:\n  - id: a\xff\n", 4, "not valid UTF-8"),
        (b"list: x\n---\nlist: y\n", 2, "must hold a single YAML document"),
        (b"list: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", 1, "nested deeper than 32"),
        (b"list: x\nvendors:\n" + b"  - " * 40 + b"x\n", 3, "nested deeper than 32"),
        (b"list: x\nversion: *nope\n", 2, "undefined YAML alias *nope"),
        (b"list: x\nversion: '1'\nvendors: \x01\n", 3, "character U+0001 is not allowed"),
    ],
)
def test_malformed_documents_are_reported_with_a_line(
    tmp_path: Path, data: bytes, line: int, problem: str
):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    with pytest.raises(BlocklistError) as info:
        load_blocklist(path)
    assert info.value.line == line, str(info.value)
    assert problem in info.value.problem


def _shape(node: yaml.Node) -> object:
    """Everything the loader looks at in a node, for comparing two composers."""
    marks = (node.start_mark.line, node.start_mark.column, node.end_mark.line)
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.value, marks)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, [_shape(child) for child in node.value], marks)
    return (node.tag, [(_shape(k), _shape(v)) for k, v in node.value], marks)


@pytest.mark.parametrize("yaml_loader", [yaml.SafeLoader, getattr(yaml, "CSafeLoader", None)])
def test_bounded_composer_builds_the_same_nodes_as_yaml_compose(
    monkeypatch: pytest.MonkeyPatch, yaml_loader: type | None
):
    if yaml_loader is None:
        pytest.skip("libyaml not available")
    monkeypatch.setattr(loader, "_YAML_LOADER", yaml_loader)
    texts = [VALID, "a: &x [1, {b: c}]\nd: *x\ne: !!str 12\nf: 'no'\ng: no\n"]
    texts += [p.read_text(encoding="utf-8") for p in shipped_blocklist_dir().glob("*.yaml")]
    for text in texts:
        ours = loader._compose(text, "t.yaml")
        assert ours is not None
        assert _shape(ours) == _shape(yaml.compose(text, Loader=yaml_loader))


def test_missing_file_error_has_no_line(tmp_path: Path):
    with pytest.raises(BlocklistError) as info:
        load_blocklist(tmp_path / "nope.yaml")
    assert info.value.line is None
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read")


def test_unicode_indicator_is_stored_as_a_labels(tmp_path: Path):
    path = write(tmp_path, edited("domain: acme.example", "domain: Bücher.example"))
    assert load_blocklist(path).indicators[0].value == "xn--bcher-kva.example"


# -- several files ------------------------------------------------------------------------------


def test_directory_loads_yaml_and_yml_sorted_and_ignores_the_rest(tmp_path: Path):
    write(tmp_path, VALID.replace("list: test", "list: b-list"), "b.yml")
    write(tmp_path, VALID.replace("list: test", "list: a-list"), "a.yaml")
    write(tmp_path, "# Blocklists\n", "README.md")
    write(tmp_path, "not: valid", ".editor-swap.yaml")
    matcher = load_blocklists([tmp_path])
    assert [b.name for b in matcher.lists] == ["a-list", "b-list"]
    # Same indicators in both: the alphabetically first file wins.
    match = matcher.match_name("acme.example")
    assert match is not None
    assert match.indicator.list_name == "a-list"
    assert len(matcher.warnings) == 4


def test_same_file_given_twice_is_loaded_once(tmp_path: Path):
    path = write(tmp_path, VALID)
    matcher = load_blocklists([tmp_path, path])
    assert len(matcher.lists) == 1
    assert matcher.warnings == []


def test_duplicate_list_names_across_files_are_an_error_at_the_second_name(tmp_path: Path):
    first = write(tmp_path, VALID, "one.yaml")
    second = write(tmp_path, VALID, "two.yaml")
    with pytest.raises(BlocklistError) as info:
        load_blocklists([first, second])
    assert (info.value.file, info.value.line) == (str(second), 1)
    assert info.value.problem == f"list name 'test' is already used by {first}"


def test_directory_without_lists_is_an_error(tmp_path: Path):
    with pytest.raises(BlocklistError, match=r"no \*\.yaml or \*\.yml blocklists"):
        load_blocklists([tmp_path])


# -- check_paths (the `blocklist check` command) -------------------------------------------------


def test_check_reports_ok_summary_and_exit_code_zero(tmp_path: Path):
    path = write(tmp_path, VALID)
    out = io.StringIO()
    assert check_paths([str(path)], out) == 0
    assert out.getvalue() == f"OK {path}: list test version 2026.01.01, 1 vendors, 4 indicators\n"


def test_check_reports_every_broken_file_and_exit_code_one(tmp_path: Path):
    good = write(tmp_path, VALID, "a.yaml")
    bad = write(
        tmp_path, edited("severity: high", "severity: hgih").replace("test", "t2"), "b.yaml"
    )
    worse = write(tmp_path, "list: [", "c.yaml")
    out = io.StringIO()
    assert check_paths([str(tmp_path), str(tmp_path / "missing.yaml")], out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"OK {good}: ")
    assert lines[1].startswith(f"{bad}:8: severity 'hgih'")
    assert lines[2].startswith(f"{worse}:1: YAML syntax error")
    assert lines[3] == f"{tmp_path / 'missing.yaml'}: no such file or directory"
    assert len(lines) == 4


def test_check_flags_duplicate_list_names_and_warns_on_overlap(tmp_path: Path):
    first = write(tmp_path, VALID, "a.yaml")
    write(tmp_path, VALID.replace("list: test", "list: other"), "b.yaml")
    dup = write(tmp_path, VALID, "c.yaml")
    out = io.StringIO()
    assert check_paths([str(tmp_path)], out) == 1
    text = out.getvalue()
    assert f"{dup}:1: list name 'test' is already used by {first}" in text
    assert "warning: domain acme.example is already listed in test" in text


def test_check_passes_overlapping_lists_with_warnings_only(tmp_path: Path):
    write(tmp_path, VALID, "a.yaml")
    write(tmp_path, VALID.replace("list: test", "list: other"), "b.yaml")
    out = io.StringIO()
    assert check_paths([str(tmp_path)], out) == 0
    assert out.getvalue().count("warning:") == 4


def test_shipped_blocklists_validate():
    directory = shipped_blocklist_dir()
    if not any(directory.glob("*.yaml")):
        pytest.skip("no shipped blocklists yet")
    out = io.StringIO()
    assert check_paths([], out) == 0, out.getvalue()
    matcher = load_blocklists([directory])
    assert matcher.indicator_count > 0
    assert matcher.match_name("notclearview.ai") is None


# -- fuzzing ---------------------------------------------------------------------------------------


def _load_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.yaml"
        path.write_bytes(data)
        try:
            load_blocklist(path)
        except BlocklistError as err:
            assert err.file == str(path)
            assert err.line is None or err.line >= 1


@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_blocklist_error(data: bytes):
    _load_bytes(data)


_YAML_BITS = st.sampled_from(
    [
        "",
        " ",
        "  ",
        "-",
        ":",
        "*",
        "&a",
        "*a",
        "[",
        "]",
        "{",
        "}",
        "'",
        '"',
        "#",
        "\n",
        "!!str",
        "~",
        "yes",
        "12",
        "1.5",
        "---",
        "?",
        "|",
        ">",
        "domain",
        "host",
        "ü",
        "\t",
        "%",
    ]
)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID)), st.integers(0, 6), _YAML_BITS), min_size=1, max_size=4
    )
)
def test_mutated_valid_files_only_ever_raise_blocklist_error(edits: list[tuple[int, int, str]]):
    text = VALID
    for position, delete, insert in edits:
        position = min(position, len(text))
        text = text[:position] + insert + text[position + delete :]
    _load_bytes(text.encode("utf-8"))
