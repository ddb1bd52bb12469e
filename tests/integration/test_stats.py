"""GET /stats, /stats/histogram, /stats/history: every figure equals a recomputation from the snapshots."""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import parse_qs, urlsplit

import pg8000.native
import pytest

from devserver.apigateway import proxy_event as api_event
from paysync import stats
from paysync.cli import EXIT_OK, EXIT_USAGE, main
from paysync.dal import merge
from paysync.dal.db import parse_database_url
from paysync.errors import InvalidSnapshot
from paysync.migrate import LoginUser, ensure_login_users
from paysync.reconcile import reconcile_snapshot
from tests.conftest import body_of, header, sample_bytes, snapshot
from tests.integration.test_db_roles import INSUFFICIENT_PRIVILEGE, login, refused

ZERO = Decimal("0.00")


# Every test of the module with several rank steps (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("rank_step")


def patient(external_id: str) -> dict:
    return {"firstName": "Ann", "lastName": "Lee", "dateOfBirth": "1980-01-02", "externalId": external_id}


def payment(external_id: str, patient_id: str, amount: str) -> dict:
    return {"amount": Decimal(amount), "patientId": patient_id, "externalId": external_id}


class Replica:
    """What the replica must hold after the snapshots so far, recomputed from the snapshots alone."""

    def __init__(self) -> None:
        self.known: set[str] = set()  # every patient ever synced (rows are never removed)
        self.live_patients: set[str] = set()
        self.payments: list[dict] = []

    def sync(self, entity: str, records: list[dict], **options: object) -> None:
        summary = reconcile_snapshot(entity, snapshot(records), source="cli", **options)
        assert summary.status == "applied"
        if options.get("dry_run"):
            return
        if entity == "patients":
            self.live_patients = {record["externalId"] for record in records}
            self.known |= self.live_patients
        else:
            self.payments = list(records)

    def totals(self) -> list[Decimal]:
        sums = dict.fromkeys(self.live_patients, ZERO)
        for pay in self.payments:
            if pay["patientId"] in sums:
                sums[pay["patientId"]] += pay["amount"]
        return sorted(sums.values())

    def figures(self) -> dict:
        totals = self.totals()
        count = len(totals)
        orphans = [p["amount"] for p in self.payments if p["patientId"] not in self.known]
        of_deleted = [p["amount"] for p in self.payments if p["patientId"] in self.known - self.live_patients]
        payers = {p["patientId"] for p in self.payments}

        def nearest_rank(percent: int) -> Decimal | None:
            return totals[max(1, math.ceil(percent * count / 100)) - 1] if totals else None

        mean = (sum(totals) / count).quantize(Decimal("0.01"), ROUND_HALF_UP) if totals else None
        return {
            "patients": {"live": count, "withoutPayments": len(self.live_patients - payers)},
            "payments": {
                "live": len(self.payments),
                "sum": sum((p["amount"] for p in self.payments), ZERO),
                "orphans": {"count": len(orphans), "sum": sum(orphans, ZERO)},
                "ofDeletedPatients": {"count": len(of_deleted), "sum": sum(of_deleted, ZERO)},
            },
            "totals": {
                "sum": sum(totals, ZERO),
                "min": nearest_rank(0),
                **{f"p{p}": nearest_rank(p) for p in (10, 25, 50, 75, 90, 99)},
                "max": nearest_rank(100),
                "mean": mean,
            },
        }


def get(invoke, path: str, query: dict | None = None) -> dict:
    response = invoke("get_stats", api_event("GET", path, query=query))
    assert response["statusCode"] == 200, response["body"]
    assert header(response, "Content-Type") == "application/json"
    return body_of(response)


def figures_of(body: dict) -> dict:
    return {key: body[key] for key in ("patients", "payments", "totals")}


def assert_histogram(body: dict, totals: list[Decimal]) -> None:
    """Below, above and each bucket of a histogram answer, counted from the totals themselves."""
    buckets = body["buckets"]
    assert body["below"] == len([t for t in totals if t < body["min"]])
    assert body["above"] == len([t for t in totals if t > body["max"]])
    for bucket in buckets:
        last = bucket is buckets[-1]
        inside = [t for t in totals if bucket["from"] <= t and (t <= bucket["to"] if last else t < bucket["to"])]
        assert bucket["count"] == len(inside), bucket


def assert_exact(conn, invoke, replica: Replica) -> None:
    body = get(invoke, "/stats")
    assert figures_of(body) == replica.figures()
    [[newest_applied]] = conn.run("SELECT max(id) FROM sync_runs WHERE status = 'applied' AND NOT dry_run")
    assert body["syncId"] == newest_applied
    histogram = get(invoke, "/stats/histogram", {"buckets": "7"})
    assert sum(bucket["count"] for bucket in histogram["buckets"]) == len(replica.live_patients)
    assert (histogram["below"], histogram["above"], histogram["patients"]) == (0, 0, len(replica.live_patients))
    assert_histogram(histogram, replica.totals())


def lifecycle(replica: Replica, conn, invoke) -> None:
    """Every kind of sync, checking every figure after each one."""
    steps = [
        ("patients", [patient(str(n)) for n in range(1, 13)]),
        # Orphans (patients 50, 51 unknown), several payments per patient, zero and negative-free amounts.
        (
            "payments",
            [payment(f"a{n}", str(n % 10 + 1), f"{n * 7 % 23}.{n * 13 % 100:02d}") for n in range(40)]
            + [payment("o1", "50", "3.33"), payment("o2", "51", "0.01"), payment("o3", "50", "12.00")],
        ),
        # Updates: amounts change, one payment moves to another patient, some deleted.
        (
            "payments",
            [payment(f"a{n}", str(n % 10 + 1), f"{n * 11 % 29}.{n * 17 % 100:02d}") for n in range(35) if n != 3]
            + [payment("a3", "12", "99.99")]
            + [payment("o1", "50", "3.33"), payment("o2", "51", "0.01"), payment("o3", "50", "12.00")],
        ),
        # Patients deleted: their payments stay live but count for no live patient.
        ("patients", [patient(str(n)) for n in range(1, 9)]),
        # Orphans link: patient 50 arrives; patients 9 and 10 are restored.
        ("patients", [patient(str(n)) for n in (*range(1, 11), 50)]),
        # An identical re-upload changes nothing and still makes one point.
        ("patients", [patient(str(n)) for n in (*range(1, 11), 50)]),
    ]
    for entity, records in steps:
        replica.sync(entity, records)
        assert_exact(conn, invoke, replica)


class TestExactness:
    def test_empty_database_answers_zeros_and_nulls(self, conn, invoke):
        body = get(invoke, "/stats")
        assert body == {
            "syncId": None,
            "computed": None,
            "patients": {"live": 0, "withoutPayments": 0},
            "payments": {
                "live": 0,
                "sum": ZERO,
                "orphans": {"count": 0, "sum": ZERO},
                "ofDeletedPatients": {"count": 0, "sum": ZERO},
            },
            "totals": dict.fromkeys(("sum", "min", "p10", "p25", "p50", "p75", "p90", "p99", "max", "mean"))
            | {"sum": ZERO},
            "topPayers": [],
        }
        histogram = get(invoke, "/stats/histogram")
        assert histogram["buckets"] == []
        assert (histogram["patients"], histogram["min"], histogram["max"]) == (0, None, None)
        # Without stored figures, ranks no sync built are never counted.
        conn.run("DELETE FROM patient_total_ranks")
        conn.run("INSERT INTO patient_total_ranks (generation, total, patients_at_or_below) VALUES (0, 1.00, 5)")
        ranged = get(invoke, "/stats/histogram", {"buckets": "2", "min": "0", "max": "10"})
        assert [(b["from"], b["to"], b["count"]) for b in ranged["buckets"]] == [
            (ZERO, Decimal("5.00"), 0),
            (Decimal("5.00"), Decimal("10.00"), 0),
        ]
        assert (ranged["below"], ranged["above"]) == (0, 0)
        assert get(invoke, "/stats/history") == []

    def test_every_figure_after_every_kind_of_sync(self, conn, invoke):
        lifecycle(Replica(), conn, invoke)
        history = get(invoke, "/stats/history")
        applied = conn.run("SELECT id FROM sync_runs WHERE status = 'applied' AND NOT dry_run ORDER BY id DESC")
        assert [point["syncId"] for point in history] == [row[0] for row in applied]
        assert figures_of(history[0]) == figures_of(get(invoke, "/stats"))
        # An identical re-upload repeats the previous point.
        assert figures_of(history[0]) == figures_of(history[1])

    def test_bulk_first_load_is_exact(self, conn, invoke, monkeypatch):
        monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", 1)  # both first loads build beside and swap
        replica = Replica()
        replica.sync("payments", [payment(f"p{n}", str(n % 5), f"{n}.{n:02d}") for n in range(30)])
        assert_exact(conn, invoke, replica)
        replica.sync("patients", [patient(str(n)) for n in range(4)])
        assert_exact(conn, invoke, replica)

    def test_the_figures_add_up(self, conn, invoke):
        lifecycle(Replica(), conn, invoke)
        body = get(invoke, "/stats")
        payments = body["payments"]
        assert (
            payments["sum"] == body["totals"]["sum"] + payments["orphans"]["sum"] + payments["ofDeletedPatients"]["sum"]
        )


class TestNothingStoredWithoutAnApply:
    def test_dry_run_stores_no_point(self, conn, invoke):
        replica = Replica()
        replica.sync("patients", [patient("1")])
        before = conn.run("SELECT * FROM sync_stats ORDER BY sync_id")
        replica.sync("patients", [patient("1"), patient("2")], dry_run=True)
        assert conn.run("SELECT * FROM sync_stats ORDER BY sync_id") == before
        assert_exact(conn, invoke, replica)

    def test_rejected_sync_stores_no_point(self, conn, invoke):
        replica = Replica()
        replica.sync("patients", [patient("1")])
        before = conn.run("SELECT * FROM sync_stats ORDER BY sync_id")
        with pytest.raises(InvalidSnapshot):
            reconcile_snapshot("patients", snapshot([patient("2"), {"externalId": "3"}]), source="cli")
        assert conn.run("SELECT * FROM sync_stats ORDER BY sync_id") == before
        assert conn.run("SELECT count(*) FROM sync_stats WHERE sync_id IS NULL") == [[0]]
        assert_exact(conn, invoke, replica)


class TestPercentilesAndTop:
    def test_percentiles_are_nearest_rank_totals(self, conn, invoke):
        replica = Replica()
        replica.sync("patients", [patient(str(n)) for n in range(1, 11)])
        replica.sync("payments", [payment(str(n), str(n), f"{n}.00") for n in range(1, 11)])
        totals = get(invoke, "/stats")["totals"]
        # n = 10: p10 is the 1st total, p25 the 3rd, p50 the 5th, p75 the 8th, p90 the 9th, p99 the 10th.
        assert [totals[k] for k in ("min", "p10", "p25", "p50", "p75", "p90", "p99", "max")] == [
            Decimal(v) for v in ("1.00", "1.00", "3.00", "5.00", "8.00", "9.00", "10.00", "10.00")
        ]
        assert totals["mean"] == Decimal("5.50")

    def test_many_patients_and_ties_answer_like_a_sort_of_the_totals(self, conn, invoke):
        # 300 live patients, 60 of them without payments (total 0.00) and long runs of equal
        # totals: the kept ranks and the walks between them must count every tie.
        replica = Replica()
        replica.sync("patients", [patient(str(n)) for n in range(1, 301)])
        amounts = [f"{n % 7 * 3}.{n % 3}0" if n % 5 else f"{n}.00" for n in range(1, 241)]
        replica.sync("payments", [payment(f"p{n}", str(n), amount) for n, amount in enumerate(amounts, 1)])
        assert_exact(conn, invoke, replica)
        for query in (
            {"buckets": "9", "min": "0", "max": "30"},
            {"buckets": "4", "min": "0.10", "max": "7.20"},
            {"buckets": "3", "min": "100", "max": "240"},
            {"buckets": "1", "min": "6.10", "max": "6.10"},
        ):
            assert_histogram(get(invoke, "/stats/histogram", query), replica.totals())

    def test_mean_rounds_half_away_from_zero(self, conn, invoke):
        replica = Replica()
        replica.sync("patients", [patient(str(n)) for n in range(1, 5)])
        replica.sync("payments", [payment("1", "1", "0.02"), payment("2", "2", "0.00")])
        # (0.02 + 0 + 0 + 0) / 4 = 0.005 -> 0.01
        assert get(invoke, "/stats")["totals"]["mean"] == Decimal("0.01")

    def test_top_payers_largest_first_ties_by_id(self, conn, invoke):
        replica = Replica()
        replica.sync("patients", [patient(str(n)) for n in range(1, 8)])
        replica.sync("payments", [payment(str(n), str(n), "5.00" if n in (2, 6) else f"{n}.00") for n in range(1, 8)])
        payers = get(invoke, "/stats", {"top": "4"})["topPayers"]
        assert [(p["externalId"], p["paymentsTotal"]) for p in payers] == [
            ("7", Decimal("7.00")),
            ("2", Decimal("5.00")),
            ("5", Decimal("5.00")),
            ("6", Decimal("5.00")),
        ]
        assert len(get(invoke, "/stats")["topPayers"]) == 7
        deleted = [patient(str(n)) for n in range(1, 7)]
        replica.sync("patients", deleted)
        assert "7" not in [p["externalId"] for p in get(invoke, "/stats")["topPayers"]]

    def test_every_top_matches_a_sort_of_the_totals(self, conn, invoke):
        replica = Replica()
        replica.sync("patients", [patient(str(n)) for n in range(1, 13)])
        amounts = ["3.00", "1.00", "3.00", "0.00", "3.00", "2.00", "1.00", "0.00", "9.00", "1.00", "0.00", "0.00"]
        replica.sync("payments", [payment(str(n), str(n), amount) for n, amount in enumerate(amounts, 1)])
        ids = dict(conn.run("SELECT external_id, id FROM patients"))
        expected = sorted(ids, key=lambda ext: (-Decimal(amounts[int(ext) - 1]), ids[ext]))
        for top in range(1, 14):
            payers = get(invoke, "/stats", {"top": str(top)})["topPayers"]
            assert [p["externalId"] for p in payers] == expected[:top]


class TestHistogram:
    @pytest.fixture
    def totals_0_10_20(self, conn):
        replica = Replica()
        replica.sync("patients", [patient("a"), patient("b"), patient("c"), patient("d")])
        replica.sync("payments", [payment("1", "b", "10.00"), payment("2", "c", "20.00"), payment("3", "d", "9.99")])
        return replica

    def test_lower_edge_inclusive_upper_exclusive_last_inclusive(self, totals_0_10_20, invoke):
        body = get(invoke, "/stats/histogram", {"buckets": "2", "min": "0", "max": "20"})
        assert [(b["from"], b["to"], b["count"]) for b in body["buckets"]] == [
            (Decimal("0.00"), Decimal("10.00"), 2),
            (Decimal("10.00"), Decimal("20.00"), 2),
        ]

    def test_default_range_is_the_smallest_to_the_largest_total(self, totals_0_10_20, invoke):
        body = get(invoke, "/stats/histogram", {"buckets": "4"})
        assert (body["min"], body["max"]) == (ZERO, Decimal("20.00"))
        assert [b["count"] for b in body["buckets"]] == [1, 1, 1, 1]
        assert [b["from"] for b in body["buckets"]] == [Decimal(v) for v in ("0.00", "5.00", "10.00", "15.00")]

    def test_range_narrower_than_the_data_counts_below_and_above(self, totals_0_10_20, invoke):
        body = get(invoke, "/stats/histogram", {"buckets": "3", "min": "0.01", "max": "10"})
        assert (body["below"], body["above"]) == (1, 1)
        assert sum(b["count"] for b in body["buckets"]) == 2

    def test_edges_that_are_not_whole_cents_round_up(self, totals_0_10_20, invoke):
        body = get(invoke, "/stats/histogram", {"buckets": "3", "min": "0", "max": "10"})
        # Edges 0, 3.333…, 6.666…, 10: a total of 3.33 lies in the first bucket, 3.34 in the second.
        assert [b["from"] for b in body["buckets"]] == [Decimal(v) for v in ("0.00", "3.34", "6.67")]
        assert [b["count"] for b in body["buckets"]] == [1, 0, 2]

    def test_bounds_between_two_cents_hold_no_bucket(self, totals_0_10_20, invoke):
        body = get(invoke, "/stats/histogram", {"min": "9.991", "max": "9.999"})
        assert body["buckets"] == []
        assert (body["below"], body["above"]) == (2, 2)

    def test_one_bound_given_the_other_defaults_to_the_data(self, totals_0_10_20, invoke):
        body = get(invoke, "/stats/histogram", {"buckets": "1", "min": "10"})
        assert (body["min"], body["max"], body["buckets"][0]["count"], body["below"]) == (
            Decimal("10.00"),
            Decimal("20.00"),
            2,
            2,
        )
        above_all = get(invoke, "/stats/histogram", {"buckets": "1", "min": "50"})
        assert (above_all["min"], above_all["max"], above_all["buckets"][0]["count"]) == (
            Decimal("50.00"),
            Decimal("50.00"),
            0,
        )


class TestHistory:
    def test_pages_newest_first_with_a_cursor(self, conn, invoke):
        replica = Replica()
        for n in range(1, 6):
            replica.sync("patients", [patient(str(k)) for k in range(n)])
        first = invoke("get_stats", api_event("GET", "/stats/history", query={"limit": "2"}))
        link = header(first, "Link")
        assert link
        cursor = parse_qs(urlsplit(link.split(";")[0].strip("<>")).query)["cursor"][0]
        second = get(invoke, "/stats/history", {"limit": "2", "cursor": cursor})
        lives = [p["patients"]["live"] for p in body_of(first) + second]
        assert lives == [5, 4, 3, 2]
        assert all(p["entity"] == "patients" for p in second)


class TestCli:
    def test_stats_prints_the_figures_and_a_histogram(self, conn, capsys):
        replica = Replica()
        replica.sync("patients", [patient(str(n)) for n in range(1, 5)])
        replica.sync("payments", [payment("1", "1", "1234.50"), payment("2", "2", "10.00"), payment("3", "9", "1.00")])

        code = main(["stats", "--top", "2", "--buckets", "2"])

        out = capsys.readouterr().out
        assert code == EXIT_OK
        assert "stats as of sync #2" in out
        assert "sum 1,245.50" in out  # live payments, orphan included
        assert "max 1,234.50" in out
        lines = out.splitlines()
        bars = [line for line in lines if line.strip().startswith("[")]
        assert len(bars) == 2
        assert bars[0].rstrip().endswith(" 3 " + "#" * 40)  # 0.00, 0.00, 10.00 in the first half
        assert bars[1].rstrip().endswith("]          1 " + "#" * 13)

    def test_stats_json(self, conn, capsys):
        Replica().sync("patients", [patient("1")])

        code = main(["stats", "--json"])

        out = body_of({"body": capsys.readouterr().out})
        assert code == EXIT_OK
        assert out["stats"]["patients"]["live"] == 1
        assert [b["count"] for b in out["histogram"]["buckets"]] == [0] * 9 + [1]

    @pytest.mark.parametrize(
        "args",
        [["--top", "0"], ["--top", "x"], ["--buckets", "101"], ["--min", "2", "--max", "1"], ["--min", "NaN"]],
    )
    def test_bad_options_are_usage_errors(self, conn, capsys, args):
        before = conn.run("SELECT * FROM sync_stats")

        code = main(["stats", *args])

        assert code == EXIT_USAGE
        assert capsys.readouterr().err.strip()
        assert conn.run("SELECT * FROM sync_stats") == before


@pytest.fixture(scope="module")
def users(database_url: str) -> Iterator[dict[str, tuple[str, str]]]:
    """A read and a sync login, created the way the deploy-time migration creates them."""
    suffix = uuid.uuid4().hex[:8]
    logins = [
        LoginUser(f"stats_reader_{suffix}", uuid.uuid4().hex, "paysync_read"),
        LoginUser(f"stats_syncer_{suffix}", uuid.uuid4().hex, "paysync_sync"),
    ]
    ensure_login_users(logins, parse_database_url(database_url))
    yield {user.group: (user.username, user.password) for user in logins}
    admin = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    for user in logins:
        admin.run(f"DROP ROLE IF EXISTS {user.username}")
    admin.close()


class TestRoles:
    def test_the_sync_login_stores_and_the_read_login_reads(self, conn, database_url, users):
        syncer = login(database_url, *users["paysync_sync"])
        reader = login(database_url, *users["paysync_read"])
        try:
            for entity in ("patients", "payments", "payments"):  # the last one changes nothing
                sample = io.BytesIO(sample_bytes(entity))
                assert reconcile_snapshot(entity, sample, source="cli", connection=syncer).status == "applied"

            figures = stats.get_stats({"top": "2"}, reader)
            histogram = stats.get_histogram({"buckets": "2"}, reader)

            assert (figures["syncId"], figures["payments"]["sum"], len(figures["topPayers"])) == (
                3,
                Decimal("52.12"),
                2,
            )
            assert [bucket["count"] for bucket in histogram["buckets"]] == [2, 2]
            assert refused(reader, "DELETE FROM patient_total_ranks") == INSUFFICIENT_PRIVILEGE
            assert refused(reader, "UPDATE sync_stats SET live_patients = 0") == INSUFFICIENT_PRIVILEGE
        finally:
            syncer.close()
            reader.close()
