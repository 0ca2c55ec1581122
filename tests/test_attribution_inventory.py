"""Behaviour of the static asset inventory (monitor.attribution.inventory): YAML and CSV with
the same columns, FILE:LINE errors, lookups by MAC, exact IP and longest CIDR."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.attribution.inventory import (
    Inventory,
    InventoryError,
    load_inventory,
    parse_inventory_csv,
    parse_inventory_yaml,
)
from monitor.config.yamlsource import ConfigError

YAML = """\
# Department assets.
- ip: 10.20.0.4
  hostname: WS04.pd.example.
  owner: PD\\alice
  unit: Homicide
  notes: forensic terminal, room 2.14
- cidr: 10.20.8.0/24
  unit: Patrol
- cidr: 10.20.0.0/16
  unit: Headquarters
- mac: 52:54:00:11:00:01
  hostname: laptop-7
  owner: bob@PD.EXAMPLE
- cidr: 2001:db8:20::/48
  unit: IPv6 lab
"""

CSV = """\
# exported from the asset register
ip,cidr,mac,hostname,owner,unit,notes
10.20.0.4,,,WS04.pd.example.,PD\\alice,Homicide,"forensic terminal, room 2.14"
,10.20.8.0/24,,,,Patrol,
,10.20.0.0/16,,,,Headquarters,

,,52-54-00-11-00-01,laptop-7,bob@PD.EXAMPLE,,
,2001:db8:20::/48,,,,IPv6 lab,
"""


def test_yaml_and_csv_with_the_same_columns_give_the_same_entries():
    from_yaml = parse_inventory_yaml(YAML, "inv.yaml")
    from_csv = parse_inventory_csv(CSV, "inv.csv")
    fields = [
        (e.selector, e.match, e.hostname, e.owner, e.owner_domain, e.unit, e.notes)
        for e in from_yaml.entries
    ]
    assert fields == [
        (e.selector, e.match, e.hostname, e.owner, e.owner_domain, e.unit, e.notes)
        for e in from_csv.entries
    ]
    assert fields[0] == (
        "ip",
        "10.20.0.4",
        "ws04.pd.example",
        "alice",
        "PD",
        "Homicide",
        "forensic terminal, room 2.14",
    )
    assert [e.line for e in from_yaml.entries] == [2, 7, 9, 11, 14]
    assert [e.line for e in from_csv.entries] == [3, 4, 5, 7, 8]


def test_lookup_prefers_mac_then_exact_ip_then_the_longest_cidr():
    inv = parse_inventory_yaml(YAML)
    assert inv.lookup("10.20.0.4").hostname == "ws04.pd.example"
    assert inv.lookup("10.20.8.9").unit == "Patrol"
    assert inv.lookup("10.20.9.9").unit == "Headquarters"
    assert inv.lookup("10.21.0.1") is None
    assert inv.lookup("10.20.0.4", mac="52:54:00:11:00:01").hostname == "laptop-7"
    assert inv.lookup("10.20.0.4", mac="52:54:00:99:00:01").hostname == "ws04.pd.example"
    assert inv.lookup(None, mac="52:54:00:11:00:01").owner == "bob"
    assert inv.lookup("2001:db8:20:1::5").unit == "IPv6 lab"
    assert inv.lookup("::ffff:10.20.8.1").unit == "Patrol"
    assert inv.lookup("not an address") is None
    assert inv.lookup("10.20.0.4", mac="garbage").owner == "alice"
    assert Inventory().lookup("10.0.0.1") is None


def test_unquoted_mac_that_yaml_reads_as_a_base_60_number_is_taken_as_written():
    # 52:54:00:11:00:01 is an integer to YAML 1.1; nobody means that in an inventory.
    inv = parse_inventory_yaml("- mac: 52:54:00:11:00:01\n  owner: 4711\n")
    (entry,) = inv.entries
    assert (entry.match, entry.owner) == ("52:54:00:11:00:01", "4711")


def test_load_inventory_picks_the_format_by_extension(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(YAML)
    (tmp_path / "b.csv").write_text(CSV)
    (tmp_path / "c.txt").write_text(CSV)
    assert len(load_inventory(tmp_path / "a.yaml")) == 5
    assert len(load_inventory(tmp_path / "b.csv")) == 5
    assert load_inventory(tmp_path / "a.yaml").path == str(tmp_path / "a.yaml")
    with pytest.raises(InventoryError, match=r"c\.txt: an inventory must be"):
        load_inventory(tmp_path / "c.txt")
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path / "missing.yaml")


def test_failed_reload_raises_and_leaves_the_loaded_inventory_untouched(tmp_path: Path):
    path = tmp_path / "inv.yaml"
    path.write_text(YAML)
    current = load_inventory(path)
    path.write_text(YAML + "- ip: 10.20.0.4\n  unit: again\n")
    with pytest.raises(InventoryError):
        load_inventory(path)
    assert current.lookup("10.20.0.4").unit == "Homicide"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("- ip: 10.0.0.1\n  hostnme: ws1\n", 2, "unknown key 'hostnme'.*did you mean 'hostname'"),
        ("- ip: 10.0.0.1\n  cidr: 10.0.0.0/8\n  unit: x\n", 1, "exactly one of ip, cidr, mac"),
        ("- hostname: ws1\n", 1, r"exactly one of ip, cidr, mac \(found none\)"),
        (
            "- ip: 10.0.0.1\n  unit: a\n- ip: 10.0.0.1\n  unit: b\n",
            3,
            "duplicate ip.*first on line 1",
        ),
        ("- cidr: 10.0.0.5/24\n  unit: a\n", 1, "host bits set; did you mean 10.0.0.0/24"),
        ("- cidr: 10.0.0.5\n  unit: a\n", 1, "no prefix length"),
        ("- ip: 10.0.0.0/24\n  unit: a\n", 1, "use cidr:"),
        ("- ip: 10.0.0.300\n  unit: a\n", 1, "not an IP address"),
        ("- mac: 52:54:00:zz:00:01\n  unit: a\n", 1, "not a MAC address"),
        ("- ip: 10.0.0.1\n", 1, "at least one of hostname, owner, unit"),
        ('- ip: 10.0.0.1\n  owner: "al\\u0007ice"\n', 2, "control character"),
        ("- ip: 10.0.0.1\n  hostname: ws 1\n", 2, "letters, digits"),
        ("- ip: 10.0.0.1\n  owner: PD\\\n", 2, "has no user name"),
        ("- ip: 10.0.0.1\n  unit: [a, b]\n", 2, "must be text, got a list"),
        ("ip: 10.0.0.1\n", 1, "must be a list of entries"),
        ("", 1, "empty"),
        ("- ip: 10.0.0.1\n  unit: 'x\n", 2, "YAML syntax error"),
    ],
)
def test_yaml_errors_name_file_and_line(text: str, where: int, message: str):
    with pytest.raises(InventoryError, match=message) as info:
        parse_inventory_yaml(text, "inv.yaml")
    assert (info.value.file, info.value.line) == ("inv.yaml", where)
    assert str(info.value).startswith(f"inv.yaml:{where}: ")
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("ip,hostnam\n", 1, "unknown column 'hostnam'.*did you mean 'hostname'"),
        ("hostname,unit\n", 1, "none of the columns ip, cidr, mac"),
        ("ip,ip\n", 1, "duplicate column"),
        ("ip,unit\n10.0.0.1,a,b\n", 2, "3 values for 2 columns"),
        ("ip,unit\n10.0.0.1,a\n\n10.0.0.1,b\n", 4, "duplicate ip.*first on line 2"),
        ('ip,unit,notes\n10.0.0.1,a,"multi\nline"\n10.0.0.x,b,\n', 4, "not an IP address"),
        ('ip,unit\n10.0.0.1,"a\n', 2, "CSV error"),
        ("ip,unit\n10.0.0.1,a\x00\n", 2, "CSV error|control character"),
        ("# only a comment\n", 1, "empty"),
    ],
)
def test_csv_errors_name_file_and_line(text: str, where: int, message: str):
    with pytest.raises(InventoryError, match=message) as info:
        parse_inventory_csv(text, "inv.csv")
    assert (info.value.file, info.value.line) == ("inv.csv", where)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_yaml_text_loads_or_raises_inventory_error(text: str):
    with contextlib.suppress(InventoryError):
        parse_inventory_yaml(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                [
                    "ip",
                    "cidr",
                    "mac",
                    "unit",
                    "owner",
                    "10.0.0.1",
                    "10.0.0.0/8",
                    "",
                    "a,b",
                    '"',
                    "\n",
                    "PD\\x",
                    "52:54:00:00:00:01",
                    "\x00",
                ]
            ),
            max_size=5,
        ),
        max_size=6,
    )
)
def test_any_csv_text_loads_or_raises_inventory_error(rows: list[list[str]]):
    text = "\n".join(",".join(cells) for cells in rows)
    with contextlib.suppress(InventoryError):
        parse_inventory_csv(text)
