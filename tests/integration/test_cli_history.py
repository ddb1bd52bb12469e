"""`paysync history` and `paysync changes` against a real PostgreSQL: the versions of a row and
the rows a sync changed, as a table and as the read API's JSON items."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from devserver.apigateway import proxy_event
from paysync.cli import EXIT_OK, main
from paysync.reconcile import reconcile_snapshot
from tests.conftest import body_of, snapshot


def patient(eid: str, first: str, middle: str | None = None) -> dict[str, Any]:
    return {"externalId": eid, "firstName": first, "lastName": "Lee", "middleName": middle, "dateOfBirth": "1990-01-02"}


def sync(entity: str, records: list[dict[str, Any]]) -> int:
    return reconcile_snapshot(entity, snapshot(records), source="cli", force=True).sync_id


@pytest.fixture
def synced(conn) -> dict[str, int]:
    """P1 inserted, updated; P2 inserted, deleted, restored; payment X1 inserted, updated."""
    ids = {
        "first": sync("patients", [patient("P1", "Ann"), patient("P2", "Bob")]),
        "update": sync("patients", [patient("P1", "Anna", "M"), patient("P2", "Bob")]),
        "delete": sync("patients", [patient("P1", "Anna", "M")]),
        "restore": sync("patients", [patient("P1", "Anna", "M"), patient("P2", "Bob")]),
        "pay": sync("payments", [{"externalId": "X1", "amount": Decimal("10.00"), "patientId": "P1"}]),
        "repay": sync("payments", [{"externalId": "X1", "amount": Decimal("12.50"), "patientId": "P2"}]),
    }
    return ids


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def api(invoke, function: str, path: str, resource: str, query: dict[str, str] | None = None, **path_params: str):
    response = invoke(function, proxy_event("GET", path, query=query, resource=resource, path_parameters=path_params))
    assert response["statusCode"] == 200
    return body_of(response)


def table_rows(out: str) -> list[list[str]]:
    """The table's lines (after the title), split into cells."""
    return [re.split(r" {2,}", line.strip()) for line in out.splitlines()[1:]]


def ms(value: str) -> str:
    """An API timestamp as the table shows it (UTC, milliseconds)."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_history_lists_every_version_newest_first(synced, capsys):
    code, out, err = run(capsys, "history", "patients", "P2")

    assert (code, err) == (EXIT_OK, "")
    assert out.splitlines()[0] == "patients 'P2': 3 version(s), newest first"
    rows = table_rows(out)
    header = ["validFrom", "validTo", "action", "syncStarted", "syncEnded"]
    assert rows[0] == [*header, "externalId", "firstName", "lastName", "middleName", "dateOfBirth"]
    shown = [row[2:] for row in rows[1:]]
    restore, delete, first = synced["restore"], synced["delete"], synced["first"]
    assert shown == [
        ["restored", str(restore), "-", "P2", "Bob", "Lee", "-", "1990-01-02"],
        ["deleted", str(delete), str(restore), "P2", "Bob", "Lee", "-", "1990-01-02"],
        ["inserted", str(first), str(delete), "P2", "Bob", "Lee", "-", "1990-01-02"],
    ]
    # Each version ends when the next begins; the newest is current.
    assert rows[1][1] == "current"
    assert rows[2][1] == rows[1][0]
    assert rows[3][1] == rows[2][0]


def test_history_json_is_the_api_items(synced, capsys, invoke):
    code, out, err = run(capsys, "history", "patients", "P1", "--json")

    assert (code, err) == (EXIT_OK, "")
    items = json.loads(out)
    path = "/patients/P1/history"
    assert items == api(invoke, "get_patients", path, "/patients/{externalId}/history", externalId="P1")
    assert [(i["action"], i["firstName"], i["middleName"]) for i in items] == [
        ("updated", "Anna", "M"),
        ("inserted", "Ann", None),
    ]
    assert [(i["syncStarted"], i["syncEnded"]) for i in items] == [
        (synced["update"], None),
        (synced["first"], synced["update"]),
    ]
    assert items[0]["validTo"] is None
    assert items[1]["validTo"] == items[0]["validFrom"]


def test_history_of_a_payment_and_the_limit(synced, capsys, invoke):
    code, out, _ = run(capsys, "history", "payments", "X1", "--limit", "1")

    assert code == EXIT_OK
    rows = table_rows(out)
    assert rows[0][5:] == ["externalId", "amount", "patientId"]
    assert [row[2:] for row in rows[1:-1]] == [["updated", str(synced["repay"]), "-", "X1", "12.50", "P2"]]
    assert rows[-1] == ["more versions follow (raise --limit)"]
    body = api(invoke, "get_payments", "/payments/X1/history", "/payments/{externalId}/history", externalId="X1")
    assert rows[1][0] == ms(body[0]["validFrom"])

    code, out, _ = run(capsys, "history", "payments", "X1", "--json", "--limit", "1")
    assert json.loads(out) == body[:1]
    assert json.loads(out, parse_float=Decimal)[0]["amount"] == Decimal("12.50")
    assert '"amount":12.50' in out


def test_changes_show_before_and_after_of_the_changed_fields(synced, capsys):
    outputs = {name: run(capsys, "changes", str(sync_id)) for name, sync_id in synced.items()}

    assert {code for code, _, _ in outputs.values()} == {EXIT_OK}
    assert {err for _, _, err in outputs.values()} == {""}
    assert outputs["update"][1].splitlines() == [
        f"sync #{synced['update']}: 1 changed row(s)",
        """  updated  patients 'P1'  firstName: "Ann" -> "Anna", middleName: null -> "M\"""",
    ]
    assert outputs["delete"][1].splitlines()[1:] == ["  deleted  patients 'P2'  deleted: false -> true"]
    assert outputs["restore"][1].splitlines()[1:] == ["  restored patients 'P2'  deleted: true -> false"]
    assert outputs["first"][1].splitlines()[1:] == [
        '  inserted patients \'P1\'  externalId="P1", firstName="Ann", lastName="Lee", middleName=null,'
        ' dateOfBirth="1990-01-02"',
        '  inserted patients \'P2\'  externalId="P2", firstName="Bob", lastName="Lee", middleName=null,'
        ' dateOfBirth="1990-01-02"',
    ]
    assert outputs["repay"][1].splitlines()[1:] == [
        '  updated  payments \'X1\'  amount: 10.00 -> 12.50, patientId: "P1" -> "P2"'
    ]


def test_changes_filters_and_json_match_the_api(synced, capsys, invoke):
    first = str(synced["first"])
    resource = "/syncs/{id}/changes"
    cases = [
        ([], {}),
        (["--action", "inserted", "--limit", "1"], {"action": "inserted", "limit": "1"}),
        (["--action", "deleted"], {"action": "deleted"}),
        (["--entity", "payments"], {"entity": "payments"}),
    ]
    for options, query in cases:
        code, out, err = run(capsys, "changes", first, "--json", *options)
        assert (code, err) == (EXIT_OK, "")
        assert json.loads(out) == api(invoke, "get_syncs", f"/syncs/{first}/changes", resource, query or None, id=first)

    _, out, _ = run(capsys, "changes", first, "--json", "--action", "inserted")
    assert [(i["externalId"], i["before"], i["changed"]) for i in json.loads(out)] == [
        ("P1", None, []),
        ("P2", None, []),
    ]
    _, out, _ = run(capsys, "changes", first, "--json", "--entity", "payments")
    assert json.loads(out) == []
    _, out, _ = run(capsys, "changes", first, "--limit", "1")
    assert out.splitlines()[-1] == "more changes follow (raise --limit)"


def test_database_url_option_is_used(synced, capsys, database_url, monkeypatch):
    from paysync.config import get_settings

    monkeypatch.delenv("DATABASE_URL")
    get_settings.cache_clear()
    code, out, _ = run(capsys, "--database-url", database_url, "changes", str(synced["delete"]), "--json")

    assert code == EXIT_OK
    assert [(i["externalId"], i["action"]) for i in json.loads(out)] == [("P2", "deleted")]
