"""External ids of pool accounts: `ledger accounts add --external-id`, `ledger accounts import`
(CSV, all or nothing, idempotent), `accounts list`, and the web directory's short memory of them.
Real PostgreSQL; the import's opening positions are read from the simulator."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import PoolTimeout

from harness.stack import SIM_ACCOUNTS, start_simulator
from harness.tcpproxy import TcpProxy
from ledger.ops.cli import main
from ledger.store.accounts import find_account
from ledger.store.db import create_pool
from tests.clocks import ManualClock
from tests.test_api import ALICE, BOB, CAROL, address
from web.directory import AccountDirectory

DAVE = address(4)


@pytest.fixture
def conn(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    """The CLI's database is the test one; no node unless a test sets one."""
    monkeypatch.setenv("DATABASE_URL", clean_db)
    monkeypatch.setenv("TRON_NODE_URL", "")
    with psycopg.connect(clean_db, autocommit=True) as c:
        yield c


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def accounts(conn: psycopg.Connection) -> dict[str, tuple[str | None, str | None]]:
    """address -> (external id, label)"""
    rows = conn.execute("SELECT address, external_id, label FROM pool_accounts").fetchall()
    return {a: (e, label) for a, e, label in rows}


def write(tmp_path: Path, text: str, name: str = "ids.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- import ------------------------------------------------------------------------------------------


def test_import_adds_and_binds_then_a_rerun_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conn.execute("INSERT INTO pool_accounts (address, label) VALUES (%s, 'old')", (CAROL,))
    hex_bob = "41" + "0" * 39 + "2"
    text = f"\ufeffaddress,external_id,label\n{ALICE},42,pool-a\n\n{hex_bob}, 43 ,\n{CAROL},p-44,new label\n"
    path = write(tmp_path, text)
    status, out, err = run(capsys, "accounts", "import", path, "--no-snapshot")
    assert status == 0, err
    assert out.splitlines()[-1] == "2 added, 1 updated, 0 unchanged"
    # An existing account gets its id; its label stays (labels are set on new accounts only).
    assert accounts(conn) == {ALICE: ("42", "pool-a"), BOB: ("43", None), CAROL: ("p-44", "old")}

    status, out, _ = run(capsys, "accounts", "import", path)
    assert status == 0
    assert out.splitlines() == ["0 added, 0 updated, 3 unchanged"]
    assert accounts(conn) == {ALICE: ("42", "pool-a"), BOB: ("43", None), CAROL: ("p-44", "old")}

    status, out, _ = run(capsys, "accounts", "list")
    lines = {line.split("\t")[1]: line.split("\t") for line in out.splitlines()}
    assert lines[ALICE][2:4] == ["42", "pool-a"] and lines[BOB][2] == "43"


def test_import_reads_standard_input(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"address,external_id\n{ALICE},9\n{BOB},10\n"))
    status, out, _ = run(capsys, "accounts", "import", "-", "--no-snapshot")
    assert status == 0
    assert out.splitlines()[-1] == "2 added, 0 updated, 0 unchanged"
    assert accounts(conn) == {ALICE: ("9", None), BOB: ("10", None)}


# Each kind of bad line: the file, and what the error must name.
BAD_FILES = {
    "bad address": ("address,external_id\n{A},1\nTnotanaddress,2\n", "line 3: address: "),
    "bad hex address": ("address,external_id\n{A},1\n42" + "0" * 40 + ",2\n", "line 3: address: "),
    "empty external id": ("address,external_id\n{A},1\n{B},\n", "line 3: external_id: "),
    "external id with a space": ("address,external_id\n{A},1\n{B},a b\n", "line 3: external_id: "),
    "external id too long": ("address,external_id\n{A},1\n{B}," + "x" * 65 + "\n", "line 3: external_id: "),
    "duplicate external id": ("address,external_id\n{A},1\n{B},1\n", "line 3: external_id: '1' is also on line 2"),
    "duplicate address": ("address,external_id\n{A},1\n{A},2\n", "line 3: address: " + ALICE + " is also on line 2"),
    "too many fields": ("address,external_id\n{A},1\n{B},2,x\n", "line 3: expected 2 fields"),
    "bad header": ("addr,id\n{A},1\n", "line 1: header must be address,external_id"),
    "formula external id =": ("address,external_id\n{A},1\n{B},=HYPERLINK(\"x\")\n", "line 3: external_id: "),
    "formula external id +": ("address,external_id\n{A},1\n{B},+1\n", "line 3: external_id: "),
    "formula external id -": ("address,external_id\n{A},1\n{B},-2+3\n", "line 3: external_id: "),
    "formula external id @": ("address,external_id\n{A},1\n{B},@SUM(A1)\n", "line 3: external_id: "),
    "NUL in a label": ("address,external_id,label\n{A},1,a\n{B},2,x\x00y\n", "line 3: label: no control characters"),
    "escape in a label": ("address,external_id,label\n{A},1,a\n{B},2,\x1b[2J\n", "line 3: label: no control characters"),  # noqa: E501
    "newline in a label": ('address,external_id,label\n{A},1,a\n{B},2,"x\ny"\n', "line 3: label: no control characters"),  # noqa: E501
    "empty file": ("\n\n", "the file is empty"),
    "bound to another account": ("address,external_id\n{A},1\n{B},77\n", "line 3: external_id: '77' is already bound to account 1 ({C})"),  # noqa: E501
    "account already has another id": ("address,external_id\n{C},1\n", "line 2: external_id: account 1 ({C}) already has the external id '77'; pass --replace"),  # noqa: E501
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_line_refuses_the_whole_file(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, '77')", (CAROL,))
    before = accounts(conn)
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text.format(A=ALICE, B=BOB, C=CAROL))
    status, out, err = run(capsys, "accounts", "import", path, "--no-snapshot")
    assert status == 2
    assert expected.format(C=CAROL) in err, err
    assert "nothing was written" in err
    assert accounts(conn) == before  # all or nothing: line 2, which was good, is not there either
    assert out == ""


def test_accounts_list_and_add_neutralise_control_characters(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    # A row written before labels were checked (or by hand) prints on one line, without escapes.
    conn.execute(
        "INSERT INTO pool_accounts (address, label, external_id) VALUES (%s, %s, '1')", (ALICE, "a\r\nFAKE\x1b[31m")
    )
    status, out, _ = run(capsys, "accounts", "list")
    assert status == 0
    assert out.splitlines() == [out.rstrip("\n")] and "\x1b" not in out and "\r" not in out
    assert "a\\r\\nFAKE\\x1b[31m" in out
    status, _, err = run(capsys, "accounts", "add", BOB, "--label", "x\x1b]0;title\x07", "--no-snapshot")
    assert status == 2 and "--label: no control characters" in err
    status, _, err = run(capsys, "accounts", "add", BOB, "--external-id", "=1+1", "--no-snapshot")
    assert status == 2 and "not starting with" in err
    assert set(accounts(conn)) == {ALICE}


def test_every_problem_of_a_file_is_reported_at_once(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, f"address,external_id\nnope,1\n{ALICE},1\n{BOB},\n")
    status, _, err = run(capsys, "accounts", "import", path)
    assert status == 2
    assert [line.split(":")[0] for line in err.splitlines()[:-1]] == ["error"] * 3
    assert "line 2: address" in err and "line 3: external_id" in err and "line 4: external_id" in err


def test_a_missing_file_is_a_clear_error(conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "accounts", "import", "/nonexistent/ids.csv")
    assert status == 2 and "No such file" in err


def test_replace_changes_an_id_and_swaps_two(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "accounts", "import", write(tmp_path, f"address,external_id\n{ALICE},1\n{BOB},2\n"), "--no-snapshot")
    swap = write(tmp_path, f"address,external_id\n{ALICE},2\n{BOB},1\n", "swap.csv")
    status, _, err = run(capsys, "accounts", "import", swap)
    assert status == 2 and "pass --replace" in err
    assert accounts(conn) == {ALICE: ("1", None), BOB: ("2", None)}
    status, out, _ = run(capsys, "accounts", "import", swap, "--replace")
    assert status == 0 and out.splitlines()[-1] == "0 added, 2 updated, 0 unchanged"
    assert accounts(conn) == {ALICE: ("2", None), BOB: ("1", None)}
    # --replace does not take an id from an account the file leaves alone.
    status, _, err = run(capsys, "accounts", "import", write(tmp_path, f"address,external_id\n{ALICE},1\n", "x.csv"))
    assert status == 2 and "already bound to account 2" in err


# -- an account needs its opening position ----------------------------------------------------------


def test_without_a_node_adding_an_account_is_refused_unless_no_snapshot(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Stored without its opening position, an account's summary would start from zero: refused,
    nothing written, and the message says what to do."""
    status, out, err = run(capsys, "accounts", "add", ALICE, "--label", "a")
    assert status != 0 and out == ""
    assert "TRON_NODE_URL is not set" in err and "--no-snapshot" in err and "nothing was written" in err
    assert accounts(conn) == {}
    status, _, err = run(capsys, "accounts", "add", ALICE, "--external-id", "42")
    assert status != 0 and "TRON_NODE_URL" in err and accounts(conn) == {}
    status, _, err = run(capsys, "accounts", "import", write(tmp_path, f"address,external_id\n{ALICE},42\n"))
    assert status != 0 and "TRON_NODE_URL" in err and accounts(conn) == {}

    status, out, err = run(capsys, "accounts", "add", ALICE, "--no-snapshot")
    assert status == 0, err
    assert accounts(conn) == {ALICE: (None, None)}
    # Nothing new to open: an account already tracked may get its external id without a node.
    status, _, err = run(capsys, "accounts", "add", ALICE, "--external-id", "42")
    assert status == 0, err
    assert accounts(conn) == {ALICE: ("42", None)}


# -- accounts add --external-id ------------------------------------------------------------------------


def test_add_with_an_external_id(conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "accounts", "add", ALICE, "--external-id", "42", "--label", "a", "--no-snapshot")
    assert status == 0, err
    assert out.splitlines()[-1] == "1 added, 0 updated, 0 unchanged"
    assert accounts(conn) == {ALICE: ("42", "a")}
    assert run(capsys, "accounts", "add", ALICE, "--external-id", "42")[0] == 0  # unchanged

    # One address only, and a well-formed id.
    status, _, err = run(capsys, "accounts", "add", ALICE, BOB, "--external-id", "43")
    assert status == 2 and "--external-id takes one address (got 2)" in err
    status, _, err = run(capsys, "accounts", "add", BOB, "--external-id", "a b")
    assert status == 2 and "external id is 1 to 64 printable ASCII" in err
    status, _, err = run(capsys, "accounts", "add", "Tnope", "--external-id", "43")
    assert status == 2 and "not a TRON address" in err
    status, _, err = run(capsys, "accounts", "add", BOB, "--replace")
    assert status == 2 and "--replace goes with --external-id" in err

    # Taken by another account; then another id for an account that has one.
    status, _, err = run(capsys, "accounts", "add", BOB, "--external-id", "42", "--no-snapshot")
    assert status == 2 and "'42' is already bound to account 1" in err
    status, _, err = run(capsys, "accounts", "add", ALICE, "--external-id", "41")
    assert status == 2 and "already has the external id '42'; pass --replace" in err
    status, out, _ = run(capsys, "accounts", "add", ALICE, "--external-id", "41", "--replace")
    assert status == 0 and out.splitlines()[-1] == "0 added, 1 updated, 0 unchanged"

    # An account added without one gets one later, no --replace needed.
    run(capsys, "accounts", "add", BOB, "--no-snapshot")
    status, out, _ = run(capsys, "accounts", "add", BOB, "--external-id", "43")
    assert status == 0 and out.splitlines()[-1] == "0 added, 1 updated, 0 unchanged"
    assert accounts(conn) == {ALICE: ("41", "a"), BOB: ("43", None)}
    assert run(capsys, "accounts", "list")[1].count("\t-\t") == 0


def test_the_database_refuses_what_the_commands_refuse(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, '1')", (ALICE,))
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, '1')", (BOB,))
    for bad in ("", "a b", "x" * 65, "é"):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, %s)", (CAROL, bad))
    # Any number of accounts without one.
    conn.execute("INSERT INTO pool_accounts (address) VALUES (%s), (%s)", (BOB, CAROL))


def test_import_takes_the_new_accounts_opening_positions(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim_proc, url = start_simulator("--paused", "--history-blocks", "40", "--opening-state", "random")
    try:
        monkeypatch.setenv("TRON_NODE_URL", url)
        monkeypatch.setenv("TRON_REQUESTS_PER_SECOND", "0")
        monkeypatch.setenv("TRON_REQUESTS_PER_DAY", "0")
        existing, new_one, new_two = SIM_ACCOUNTS
        conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (existing,))
        path = write(tmp_path, f"address,external_id\n{existing},1\n{new_one},2\n{new_two},3\n")
        status, out, err = run(capsys, "accounts", "import", path)
        assert status == 0, err
        assert out.splitlines()[-1] == "2 added, 1 updated, 0 unchanged"
    finally:
        sim_proc.stop()
    openings = {row[0] for row in conn.execute("SELECT address FROM position_openings WHERE source = 'chain'")}
    # Like `accounts add`: each new account; an account already tracked keeps its own history.
    assert openings == {new_one, new_two}


# -- the web's directory -----------------------------------------------------------------------------


def test_the_directory_sees_a_moved_external_id_within_its_ttl(conn: psycopg.Connection, clean_db: str) -> None:
    conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, 'a'), (%s, 'b')", (ALICE, BOB))
    pool = create_pool(clean_db, max_size=1, name="directory-test")
    try:
        clock = ManualClock()
        directory = AccountDirectory(pool, external_ttl=0.5, negative_ttl=0.2, clock=clock)
        found = directory.resolve_external("a")
        assert found is not None and found.address == ALICE
        assert directory.resolve_external("c") is None
        conn.execute("UPDATE pool_accounts SET external_id = NULL WHERE address = %s", (ALICE,))
        conn.execute("UPDATE pool_accounts SET external_id = 'a' WHERE address = %s", (BOB,))
        conn.execute("UPDATE pool_accounts SET external_id = 'c' WHERE address = %s", (ALICE,))
        found = directory.resolve_external("a")
        assert found is not None and found.address == ALICE  # remembered
        clock.advance(0.2)
        assert directory.resolve_external("c") is not None  # "unknown" is remembered for less
        clock.advance(0.29)
        found = directory.resolve_external("a")
        assert found is not None and found.address == ALICE  # still remembered
        clock.advance(0.01)
        found = directory.resolve_external("a")
        assert found is not None and found.address == BOB
    finally:
        pool.close()


def test_the_directory_uses_an_expired_mapping_while_postgresql_is_away(
    conn: psycopg.Connection, clean_db: str
) -> None:
    conn.execute("INSERT INTO pool_accounts (address, external_id) VALUES (%s, 'a')", (ALICE,))
    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = make_conninfo(clean_db, host="127.0.0.1", port=str(proxy.port))
        pool = create_pool(url, max_size=1, name="directory-test", timeout=0.5)
        try:
            clock = ManualClock()
            directory = AccountDirectory(pool, external_ttl=0.1, negative_ttl=0.1, clock=clock)
            found = directory.resolve_external("a")
            assert found is not None and found.address == ALICE
            proxy.close()
            clock.advance(0.1)
            found = directory.resolve_external("a")  # expired, and PostgreSQL cannot be asked: still known
            assert found is not None and found.address == ALICE
            with pytest.raises((psycopg.OperationalError, PoolTimeout)):
                directory.resolve_external("never-seen")
            proxy.open()
            deadline = time.monotonic() + 15  # the pool's reconnection backs off: give it time
            while True:
                try:
                    assert directory.resolve_external("never-seen") is None
                    break
                except (psycopg.OperationalError, PoolTimeout):
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            known = find_account(conn, ALICE)
            assert known is not None and known.external_id == "a"
        finally:
            pool.close()
