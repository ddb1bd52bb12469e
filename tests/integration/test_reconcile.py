"""The reconcile engine against a real PostgreSQL: every sync rule."""

from __future__ import annotations

import gzip
import io
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pg8000.native
import pytest

from paysync.dal import merge
from paysync.dal.db import parse_database_url
from paysync.errors import DeletionGuardTriggered, InvalidSnapshot, MalformedSnapshot, StaleSnapshot
from paysync.reconcile import reconcile_snapshot
from tests.conftest import database_state, sample_bytes, snapshot, table_state


def patient(external_id: str | int, first: str = "Ann", last: str = "Lee", **extra: object) -> dict:
    return {"firstName": first, "lastName": last, "dateOfBirth": "1980-01-02", "externalId": external_id, **extra}


def payment(external_id: str | int, patient_id: str | int, amount: str = "10.00") -> dict:
    return {"amount": Decimal(amount), "patientId": patient_id, "externalId": external_id}


def sync(entity: str, records: list, **options: object):
    return reconcile_snapshot(entity, snapshot(records), source="cli", **options)


def totals(conn: pg8000.native.Connection) -> dict[str, tuple[Decimal, int]]:
    rows = conn.run("SELECT external_id, payments_total, payments_count FROM patients WHERE deleted IS NULL")
    return {external_id: (total, count) for external_id, total, count in rows}


def load_samples() -> None:
    for entity in ("patients", "payments"):
        reconcile_snapshot(entity, io.BytesIO(sample_bytes(entity)), source="cli")


# A re-sync holding a repeated externalId, each kind of repeat: (snapshot, the repeats found).
RESYNC_REPEATS = {
    "an unchanged live row twice": (["1", "2", "3", "4", "2"], [(4, "2")]),
    "a live row unchanged, then changed": (["1", "2", "3", "4", ("2", "x")], [(4, "2")]),
    "a live row changed twice": (["1", ("2", "x"), "3", "4", ("2", "y")], [(4, "2")]),
    "a deleted row restored twice": (["1", "2", "3", "4", "5", "5"], [(5, "5")]),
    "a new id twice": (["1", "2", "3", "4", "6", "6"], [(5, "6")]),
    "a missing row's id twice, the others unchanged": (["1", "2", "3", "3"], [(3, "3")]),
}


class TestSampleData:
    def test_sample_snapshots_load_with_orphans_and_totals(self, conn):
        patients = reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="cli")
        payments = reconcile_snapshot("payments", io.BytesIO(sample_bytes("payments")), source="cli")

        assert (patients.received, patients.inserted, patients.status) == (4, 4, "applied")
        assert (payments.received, payments.inserted, payments.orphaned) == (6, 6, 2)
        assert totals(conn) == {
            "5": (Decimal("17.22"), 3),
            "4": (Decimal("0.00"), 0),
            "8": (Decimal("9.29"), 1),
            "15": (Decimal("0.00"), 0),
        }
        orphans = conn.run("SELECT external_id, patient_external_id FROM payments WHERE patient_id IS NULL ORDER BY 1")
        assert orphans == [["601", "6"], ["602", "6"]]

    def test_orphans_link_when_their_patient_arrives(self, conn):
        load_samples()
        with_six = [*__import__("json").loads(sample_bytes("patients")), patient("6", "Zhora", "Salome")]

        summary = sync("patients", with_six)

        assert (summary.inserted, summary.unchanged, summary.orphaned) == (1, 4, 0)
        assert totals(conn)["6"] == (Decimal("25.61"), 2)
        assert conn.run("SELECT count(*) FROM payments WHERE patient_id IS NULL") == [[0]]


class TestPatientRules:
    def test_new_rows_are_inserted_with_created_equal_updated(self, conn):
        summary = sync("patients", [patient(1), patient("2", middleName="Q")])

        assert (summary.inserted, summary.received) == (2, 2)
        rows = conn.run("SELECT external_id, middle_name, created = updated, deleted FROM patients ORDER BY id")
        assert rows == [["1", None, True, None], ["2", "Q", True, None]]

    def test_identical_resync_changes_nothing_and_keeps_updated(self, conn):
        sync("patients", [patient(1), patient(2)])
        before = table_state(conn)
        time.sleep(0.6)  # the first sync's own writes reach the statistics within 500 ms
        writes_before = conn.run("SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables WHERE relname = 'patients'")

        summary = sync("patients", [patient(1), patient(2)])

        assert (summary.unchanged, summary.updated, summary.inserted, summary.deleted) == (2, 0, 0, 0)
        assert table_state(conn) == before
        time.sleep(0.6)  # statistics are flushed at most every 500 ms
        writes_after = conn.run("SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables WHERE relname = 'patients'")
        assert writes_after == writes_before

    def test_changed_field_updates_row_and_bumps_updated_only_there(self, conn):
        sync("patients", [patient(1), patient(2)])
        [[created, updated]] = conn.run("SELECT created, updated FROM patients WHERE external_id = '1'")
        other_before = conn.run("SELECT updated FROM patients WHERE external_id = '2'")

        summary = sync("patients", [patient(1, last="Smith"), patient(2)])

        assert (summary.updated, summary.unchanged) == (1, 1)
        [[last, created_after, updated_after]] = conn.run(
            "SELECT last_name, created, updated FROM patients WHERE external_id = '1'"
        )
        assert (last, created_after) == ("Smith", created)
        assert updated_after > updated
        assert conn.run("SELECT updated FROM patients WHERE external_id = '2'") == other_before

    def test_middle_name_null_and_absent_are_the_same(self, conn):
        sync("patients", [patient(1, middleName=None)])

        summary = sync("patients", [patient(1)])

        assert summary.unchanged == 1

    def test_missing_rows_are_soft_deleted_and_hidden_from_totals(self, conn):
        sync("patients", [patient(1), patient(2)])

        summary = sync("patients", [patient(1)])

        assert summary.deleted == 1
        [[deleted, updated]] = conn.run("SELECT deleted, updated FROM patients WHERE external_id = '2'")
        assert deleted is not None
        assert deleted == updated
        assert set(totals(conn)) == {"1"}

    def test_reappearing_row_is_restored_with_the_same_id(self, conn):
        sync("patients", [patient(1), patient(2)])
        [[original_id]] = conn.run("SELECT id FROM patients WHERE external_id = '2'")
        sync("patients", [patient(1)])

        summary = sync("patients", [patient(1), patient(2, first="Bo")])

        assert (summary.restored, summary.updated, summary.inserted) == (1, 0, 0)
        assert conn.run("SELECT id, first_name, deleted FROM patients WHERE external_id = '2'") == [
            [original_id, "Bo", None]
        ]

    def test_integer_ids_are_stored_as_text(self, conn):
        sync("patients", [patient(7)])
        sync("payments", [payment(70, 7, "1.50")])

        assert conn.run("SELECT external_id FROM patients") == [["7"]]
        assert conn.run("SELECT external_id, patient_external_id FROM payments") == [["70", "7"]]
        assert totals(conn)["7"] == (Decimal("1.50"), 1)

    def test_text_needing_copy_escapes_round_trips(self, conn):
        tricky = 'O\'Brien, "Jr" \\ tab\there\nnew line ü 漢'
        sync("patients", [patient(1, first=tricky, middleName="\\N")])

        assert conn.run("SELECT first_name, middle_name FROM patients") == [[tricky, "\\N"]]


class TestPaymentRules:
    def test_amount_change_moves_the_total(self, conn):
        sync("patients", [patient(1)])
        sync("payments", [payment(10, 1, "10.00"), payment(11, 1, "5.55")])

        summary = sync("payments", [payment(10, 1, "12.34"), payment(11, 1, "5.55")])

        assert (summary.updated, summary.unchanged) == (1, 1)
        assert totals(conn)["1"] == (Decimal("17.89"), 2)

    def test_payment_moving_to_another_patient_updates_both_totals(self, conn):
        sync("patients", [patient(1), patient(2)])
        sync("payments", [payment(10, 1, "10.00"), payment(11, 1, "1.00")])

        sync("payments", [payment(10, 2, "10.00"), payment(11, 1, "1.00")])

        assert totals(conn) == {"1": (Decimal("1.00"), 1), "2": (Decimal("10.00"), 1)}

    def test_deleted_payment_leaves_the_total_and_restore_brings_it_back(self, conn):
        sync("patients", [patient(1)])
        sync("payments", [payment(10, 1, "10.00"), payment(11, 1, "1.00")])

        deleted = sync("payments", [payment(11, 1, "1.00")])
        assert deleted.deleted == 1
        assert totals(conn)["1"] == (Decimal("1.00"), 1)

        restored = sync("payments", [payment(10, 1, "10.00"), payment(11, 1, "1.00")])
        assert restored.restored == 1
        assert totals(conn)["1"] == (Decimal("11.00"), 2)

    def test_payments_of_a_deleted_patient_count_again_when_it_is_restored(self, conn):
        sync("patients", [patient(1), patient(2)])
        sync("payments", [payment(10, 1, "10.00")])
        sync("patients", [patient(2)])

        sync("patients", [patient(1), patient(2)])

        assert totals(conn)["1"] == (Decimal("10.00"), 1)

    def test_totals_moved_by_deltas_equal_a_recount_after_every_kind_of_change(self, conn, monkeypatch):
        def recount() -> list[list[object]]:
            return conn.run(
                """SELECT p.external_id, coalesce(sum(pay.amount), 0), count(pay.id) FROM patients p
                   LEFT JOIN payments pay ON pay.patient_id = p.id AND pay.deleted IS NULL
                   GROUP BY p.id ORDER BY p.id"""
            )

        def stored() -> list[list[object]]:
            return conn.run("SELECT external_id, payments_total, payments_count FROM patients ORDER BY id")

        monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", 3)  # the first loads take the bulk path
        sync("patients", [patient(1), patient(2), patient(3)])
        sync("payments", [payment(10, 1, "1.10"), payment(11, 1, "2.20"), payment(12, 2, "3.30"), payment(13, 9)])
        assert stored() == recount()
        steps = [
            # amount change, move to another patient, delete, new, orphan moving to a known patient
            ("payments", [payment(10, 1, "5.00"), payment(11, 3, "2.20"), payment(14, 2, "0.01"), payment(13, 2)]),
            # a deleted orphan waits for its patient; the patient arrives: only live payments count
            ("payments", [payment(10, 1, "5.00"), payment(11, 3, "2.20"), payment(15, 8, "7.00")]),
            ("payments", [payment(10, 1, "5.00"), payment(11, 3, "2.20"), payment(16, 8, "4.00")]),
            ("patients", [patient(1), patient(2), patient(3), patient(8)]),
            # restore, a change back to the old amount, a move away and back in one sync pair
            ("payments", [payment(10, 2, "1.10"), payment(11, 3, "2.20"), payment(12, 2, "3.30"), payment(16, 8)]),
            ("payments", [payment(10, 1, "1.10"), payment(11, 3, "2.20"), payment(12, 2, "3.30"), payment(16, 8)]),
        ]
        for entity, records in steps:
            sync(entity, records, force=True)
            assert stored() == recount()

    @pytest.mark.parametrize("bulk_min_rows", [2, 1_000], ids=["bulk first load", "first load in place"])
    def test_new_rows_get_ids_in_snapshot_order_and_later_rows_follow(self, conn, monkeypatch, bulk_min_rows):
        monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", bulk_min_rows)
        sync("patients", [patient("z"), patient("a"), patient("m")])
        sync("payments", [payment("p9", "z"), payment("p1", "a"), payment("p5", "m"), payment("p0", "z")])

        sync("patients", [patient("z"), patient("a"), patient("m"), patient("b")])
        sync(
            "payments",
            [payment("p9", "z"), payment("p1", "a"), payment("p5", "m"), payment("p0", "z"), payment("p2", "b")],
        )

        assert conn.run("SELECT id, external_id FROM patients ORDER BY id") == [[1, "z"], [2, "a"], [3, "m"], [4, "b"]]
        assert conn.run("SELECT id, external_id FROM payments ORDER BY id") == [
            [1, "p9"],
            [2, "p1"],
            [3, "p5"],
            [4, "p0"],
            [5, "p2"],
        ]
        # Totals were moved on the way (the bulk path rebuilds patients with them).
        assert totals(conn)["z"] == (Decimal("20.00"), 2)

    def test_statistics_follow_the_totals_a_payments_sync_moves(self, conn):
        def total_stats() -> list[list[object]]:
            return conn.run(
                """SELECT CAST(most_common_vals AS text), CAST(histogram_bounds AS text) FROM pg_stats
                   WHERE tablename = 'patients' AND attname = 'payments_total'"""
            )

        sync("patients", [patient(i) for i in range(1, 5)])
        assert total_stats() == [["{0.00}", None]]  # analyzed with the load: every total is 0
        names = conn.run("SELECT attname FROM pg_stats WHERE tablename = 'patients' ORDER BY attname")

        sync("payments", [payment(10, 1, "1.00"), payment(11, 2, "2.00"), payment(12, 3, "3.00")])

        # The payments sync analyzed the totals it moved (the other columns keep their statistics).
        assert total_stats() == [[None, "{0.00,1.00,2.00,3.00}"]]
        assert conn.run("SELECT attname FROM pg_stats WHERE tablename = 'patients' ORDER BY attname") == names

    def test_orphan_keeps_its_reference_and_counts_as_orphaned(self, conn):
        sync("patients", [patient(1)])

        summary = sync("payments", [payment(10, 1), payment(11, "nobody")])

        assert summary.orphaned == 1
        assert conn.run("SELECT patient_external_id, patient_id FROM payments WHERE external_id = '11'") == [
            ["nobody", None]
        ]

    def test_amounts_keep_their_cents(self, conn):
        sync("patients", [patient(1)])
        raw = (
            b'[{"amount": 0.1, "patientId": "1", "externalId": "a"},'
            b' {"amount": 0.2, "patientId": "1", "externalId": "b"},'
            b' {"amount": 9999999999.99, "patientId": "1", "externalId": "c"},'
            b' {"amount": 7, "patientId": "1", "externalId": "d"}]'
        )

        reconcile_snapshot("payments", io.BytesIO(raw), source="cli")

        assert totals(conn)["1"] == (Decimal("10000000007.29"), 4)


class TestRejections:
    def test_invalid_records_are_listed_and_nothing_is_applied(self, conn):
        sync("patients", [patient(1)])
        before = table_state(conn)
        records = [
            patient(2),
            {"firstName": "No", "lastName": "Id", "dateOfBirth": "1990-01-01"},
            patient(3, dateOfBirth="1990-02-30"),
            patient(4, firstName=5),
            "not an object",
            patient(True),
        ]

        with pytest.raises(InvalidSnapshot) as caught:
            sync("patients", records)

        errors = [(d["index"], d["externalId"], d["field"]) for d in caught.value.details]
        assert errors == [
            (1, None, "externalId"),
            (2, "3", "dateOfBirth"),
            (3, "4", "firstName"),
            (4, None, None),
            (5, None, "externalId"),
        ]
        assert caught.value.total == 5
        assert table_state(conn) == before

    def test_invalid_amounts_are_rejected(self, conn):
        raw = (
            b'[{"amount": 1.234, "patientId": "1", "externalId": "a"},'
            b' {"amount": "12.00", "patientId": "1", "externalId": "b"},'
            b' {"amount": 1e400, "patientId": "1", "externalId": "c"},'
            b' {"amount": 10000000000, "patientId": "1", "externalId": "d"},'
            b' {"amount": null, "patientId": "1", "externalId": "e"},'
            b' {"amount": 1.5, "patientId": 1.5, "externalId": "f"}]'
        )

        with pytest.raises(InvalidSnapshot) as caught:
            reconcile_snapshot("payments", io.BytesIO(raw), source="cli")

        assert [(d["externalId"], d["field"]) for d in caught.value.details] == [
            ("a", "amount"),
            ("b", "amount"),
            ("c", "amount"),
            ("d", "amount"),
            ("e", "amount"),
            ("f", "patientId"),
        ]
        assert conn.run("SELECT count(*) FROM payments") == [[0]]

    @pytest.mark.parametrize("bulk_min_rows", [2, 1_000], ids=["bulk first load", "first load in place"])
    @pytest.mark.parametrize("entity", ["patients", "payments"])
    def test_a_first_load_refuses_duplicates_found_by_the_unique_key(self, conn, monkeypatch, entity, bulk_min_rows):
        # A first load skips the duplicate search and lets the empty table's unique key find them.
        monkeypatch.setattr(merge, "BULK_LOAD_MIN_ROWS", bulk_min_rows)
        before = table_state(conn)
        make = patient if entity == "patients" else (lambda eid: payment(eid, 1))

        with pytest.raises(InvalidSnapshot) as caught:
            sync(entity, [make(1), make(2), make(3), make("1"), make(5), make(3)])

        assert [(d["index"], d["externalId"]) for d in caught.value.details] == [(3, "1"), (5, "3")]
        assert caught.value.total == 2
        assert table_state(conn) == before
        assert conn.run("SELECT status, error->>'code' FROM sync_runs") == [["rejected", "invalid_records"]]
        # and the same table then takes a valid first load
        assert sync(entity, [make(1), make(2), make(3)]).inserted == 3

    def test_duplicate_external_ids_reject_the_snapshot(self, conn):
        with pytest.raises(InvalidSnapshot) as caught:
            sync("patients", [patient(1), patient(2), patient("1"), patient(2)])

        assert [(d["index"], d["externalId"]) for d in caught.value.details] == [(2, "1"), (3, "2")]
        assert "first seen at index 0" in caught.value.details[0]["message"]
        assert conn.run("SELECT count(*) FROM patients") == [[0]]

    @pytest.mark.parametrize(("records", "repeats"), RESYNC_REPEATS.values(), ids=RESYNC_REPEATS.keys())
    @pytest.mark.parametrize("entity", ["patients", "payments"])
    def test_a_resync_refuses_every_kind_of_repeated_id(self, conn, entity, records, repeats):
        # Given a replica holding 1-4 live and 5 deleted
        def make(record: str | tuple[str, str]):
            eid, variant = record if isinstance(record, tuple) else (record, "")
            if entity == "patients":
                return patient(eid, first=f"Ann{variant}")
            return payment(eid, 1, "10.00" if not variant else ("11.00" if variant == "x" else "12.00"))

        if entity == "payments":
            sync("patients", [patient(1)])
        sync(entity, [make(e) for e in ["1", "2", "3", "4", "5"]])
        sync(entity, [make(e) for e in ["1", "2", "3", "4"]])
        before = database_state(conn)

        with pytest.raises(InvalidSnapshot) as caught:
            sync(entity, [make(record) for record in records], force=True)

        assert [(d["index"], d["externalId"]) for d in caught.value.details] == repeats
        assert all("duplicate externalId" in d["message"] for d in caught.value.details)
        after = database_state(conn)
        assert after.pop("sync_runs")[-1][0] > before.pop("sync_runs")[-1][0]  # the refusal is recorded
        assert after == before

    def test_error_list_is_capped_at_100_with_the_total(self, conn):
        records = [patient(i, dateOfBirth="bad") for i in range(250)]

        with pytest.raises(InvalidSnapshot) as caught:
            sync("patients", records)

        assert len(caught.value.details) == 100
        assert caught.value.total == 250
        assert caught.value.details[0]["index"] == 0

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"", "empty"),
            (b"   \n", "empty"),
            (b'{"externalId": "1"}', "JSON array"),
            (b"[{]", "invalid JSON"),
            (b'[{"amount": NaN, "patientId": "1", "externalId": "1"}]', "invalid JSON"),
            (b"[] trailing", "invalid JSON"),
            (b"\x1f\x8bnot really gzip", "gzip"),
        ],
    )
    def test_malformed_snapshot_is_rejected(self, conn, raw, message):
        sync("payments", [payment(1, 1)])
        before = table_state(conn)

        with pytest.raises(MalformedSnapshot) as caught:
            reconcile_snapshot("payments", io.BytesIO(raw), source="cli")

        assert message in caught.value.message
        assert table_state(conn) == before

    def test_rejected_sync_is_recorded(self, conn):
        with pytest.raises(InvalidSnapshot) as caught:
            sync("patients", [patient(1), patient(1)])

        [[status, error_code, total]] = conn.run(
            "SELECT status, error->>'code', (error->>'total')::int FROM sync_runs WHERE id = :id",
            id=caught.value.sync_id,
        )
        assert (status, error_code, total) == ("rejected", "invalid_records", 1)


class TestDeletionGuard:
    def test_guard_refuses_to_wipe_a_large_table(self, conn):
        sync("patients", [patient(i) for i in range(100)])
        before = table_state(conn)

        with pytest.raises(DeletionGuardTriggered) as caught:
            sync("patients", [])

        assert "delete 100 of 100" in caught.value.message
        assert table_state(conn) == before

    def test_guard_allows_exactly_half(self, conn):
        sync("patients", [patient(i) for i in range(100)])

        summary = sync("patients", [patient(i) for i in range(50)])

        assert summary.deleted == 50

    def test_guard_refuses_just_over_half(self, conn):
        sync("patients", [patient(i) for i in range(100)])

        with pytest.raises(DeletionGuardTriggered):
            sync("patients", [patient(i) for i in range(49)])

    def test_force_overrides_the_guard(self, conn):
        sync("patients", [patient(i) for i in range(100)])

        summary = sync("patients", [], force=True)

        assert (summary.deleted, summary.forced) == (100, True)
        assert totals(conn) == {}

    def test_small_tables_are_not_guarded_by_the_ratio(self, conn):
        sync("patients", [patient(i) for i in range(99)])

        assert sync("patients", [patient(0)]).deleted == 98

    def test_thresholds_come_from_settings(self, conn, settings_env):
        settings_env(DELETE_GUARD_MIN_ROWS="4", DELETE_GUARD_RATIO="0.25")
        sync("patients", [patient(i) for i in range(4)])

        with pytest.raises(DeletionGuardTriggered):
            sync("patients", [patient(i) for i in range(2)])


class TestDryRun:
    def test_dry_run_reports_the_same_summary_and_applies_nothing(self, conn):
        sync("patients", [patient(1), patient(2)])
        before = table_state(conn)
        change = [patient(1, first="New"), patient(3)]

        preview = sync("patients", change, dry_run=True)

        assert table_state(conn) == before
        assert (preview.dry_run, preview.status) == (True, "applied")
        real = sync("patients", change)
        counts = ("received", "inserted", "updated", "deleted", "restored", "unchanged", "orphaned")
        assert [getattr(preview, c) for c in counts] == [getattr(real, c) for c in counts]
        assert (real.inserted, real.updated, real.deleted) == (1, 1, 1)
        assert conn.run("SELECT dry_run FROM sync_runs ORDER BY id") == [[False], [True], [False]]

    def test_dry_run_still_trips_the_guard(self, conn):
        sync("patients", [patient(i) for i in range(100)])

        with pytest.raises(DeletionGuardTriggered):
            sync("patients", [], dry_run=True)


class TestTransactions:
    def test_failure_mid_merge_leaves_the_database_unchanged(self, conn, monkeypatch):
        sync("patients", [patient(1), patient(2)])
        sync("payments", [payment(10, 1)])
        before = table_state(conn)

        def broken_refresh(connection):
            connection.run("SELECT 1 / 0")  # fails after delete, update and insert ran

        monkeypatch.setattr(merge, "refresh_totals", broken_refresh)
        with pytest.raises(pg8000.native.DatabaseError):
            sync("payments", [payment(10, 2, "99.99"), payment(11, 1)])

        assert table_state(conn) == before
        [[status, code]] = conn.run("SELECT status, error->>'code' FROM sync_runs ORDER BY id DESC LIMIT 1")
        assert (status, code) == ("failed", "internal_error")

    def test_concurrent_syncs_of_one_entity_are_serialized(self, conn, database_url):
        holder = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
        holder.run("BEGIN")
        holder.run("SELECT pg_advisory_xact_lock(:key)", key=merge.LOCK_KEYS["patients"])
        results = []
        worker = threading.Thread(target=lambda: results.append(sync("patients", [patient(1)])))

        worker.start()
        time.sleep(1.0)
        still_waiting = worker.is_alive()
        waiting_locks = conn.run("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        holder.run("COMMIT")
        worker.join(timeout=10)
        holder.close()

        assert still_waiting
        assert waiting_locks == [[1]]
        assert results[0].inserted == 1

    def test_parallel_syncs_both_apply_in_some_order(self, conn):
        results = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(sync("patients", [patient(1, first=f"v{i}")])))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)

        assert sorted((r.inserted, r.updated) for r in results) == [(0, 1), (1, 0)]
        assert conn.run("SELECT count(*) FROM patients") == [[1]]


class TestInputFormats:
    def test_gzip_snapshot(self, conn):
        data = gzip.compress(sample_bytes("patients"))

        summary = reconcile_snapshot("patients", io.BytesIO(data), source="cli")

        assert summary.inserted == 4

    def test_byte_order_mark_and_leading_whitespace(self, conn):
        data = b"\xef\xbb\xbf \n\t" + sample_bytes("patients")

        assert reconcile_snapshot("patients", io.BytesIO(data), source="cli").inserted == 4

    def test_unknown_fields_are_ignored(self, conn):
        summary = sync("patients", [patient(1, email="x@example.org")])

        assert summary.inserted == 1

    def test_large_snapshot_streams_in_many_copy_chunks(self, conn, monkeypatch):
        monkeypatch.setattr("paysync.snapshot.COPY_CHUNK_CHARS", 1000)
        records = [patient(i) for i in range(3000)]

        summary = sync("patients", records)

        assert summary.inserted == 3000
        assert conn.run("SELECT count(*) FROM patients") == [[3000]]


def test_syncs_of_different_entities_queue_up_too(conn, database_url):
    """A payments sync waits for a patients sync (they write each other's tables)."""
    holder = pg8000.native.Connection(**parse_database_url(database_url).as_kwargs())
    holder.run("BEGIN")
    holder.run("SELECT pg_advisory_xact_lock(:key)", key=merge.LOCK_KEYS["patients"])
    results = []
    worker = threading.Thread(target=lambda: results.append(sync("payments", [payment(1, 1)])))

    worker.start()
    time.sleep(1.0)
    still_waiting = worker.is_alive()
    holder.run("COMMIT")
    worker.join(timeout=10)
    holder.close()

    assert still_waiting
    assert results[0].inserted == 1


class TestSnapshotTime:
    """A client-stated snapshot time: older than the newest applied one is stale unless forced."""

    def test_older_stated_snapshot_is_refused_and_recorded(self, conn):
        taken = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
        sync("patients", [patient(1), patient(2)], snapshot_at=taken)
        before = table_state(conn)

        with pytest.raises(StaleSnapshot) as raised:
            sync("patients", [patient(1)], snapshot_at=taken - timedelta(microseconds=1))

        assert raised.value.code == "stale_snapshot"
        assert table_state(conn) == before
        assert conn.run("SELECT status, error->>'code', snapshot_at FROM sync_runs ORDER BY id") == [
            ["applied", None, taken],
            ["rejected", "stale_snapshot", taken - timedelta(microseconds=1)],
        ]

    def test_only_applied_real_syncs_set_the_bar(self, conn):
        taken = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
        sync("patients", [patient(1)], snapshot_at=taken)
        sync("patients", [patient(1, first="Dry")], snapshot_at=taken + timedelta(hours=2), dry_run=True)
        with pytest.raises(InvalidSnapshot):
            sync("patients", [{"externalId": "1"}], snapshot_at=taken + timedelta(hours=3))

        summary = sync("patients", [patient(1, first="Later")], snapshot_at=taken + timedelta(hours=1))

        assert (summary.status, summary.updated) == ("applied", 1)

    def test_equal_time_is_not_older_and_force_applies_an_older_one(self, conn):
        taken = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
        sync("patients", [patient(1)], snapshot_at=taken)

        assert sync("patients", [patient(1, first="Same")], snapshot_at=taken).updated == 1
        forced = sync("patients", [patient(1, first="Old")], snapshot_at=taken - timedelta(days=1), force=True)

        assert (forced.status, forced.forced, forced.updated) == ("applied", True, 1)


def test_rejection_naming_an_external_id_with_nul_is_recorded(conn):
    """PostgreSQL jsonb cannot hold NUL: the recorded error shows it escaped as \\u0000."""
    bad = io.BytesIO(b'[{"firstName": "A", "lastName": "B", "dateOfBirth": "1980-01-02", "externalId": "x\\u0000y"}]')

    with pytest.raises(InvalidSnapshot) as raised:
        reconcile_snapshot("patients", bad, source="cli")

    assert raised.value.sync_id is not None
    assert conn.run("SELECT status, error->'details'->0->>'externalId' FROM sync_runs") == [["rejected", "x\\u0000y"]]
    assert conn.run("SELECT count(*) FROM patients") == [[0]]


def test_dry_runs_and_refused_syncs_are_recorded_under_the_id_reserved_when_they_began(conn):
    # The id is taken when the merge starts (history rows name it); a run recorded after the
    # rollback keeps it, so previews and refusals leave no gaps in the ids.
    preview = reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="cli", dry_run=True)
    with pytest.raises(InvalidSnapshot) as refused:
        reconcile_snapshot("patients", io.BytesIO(b'[{"externalId": "1"}]'), source="cli")
    applied = reconcile_snapshot("patients", io.BytesIO(sample_bytes("patients")), source="cli")

    ids = [row[0] for row in conn.run("SELECT id FROM sync_runs ORDER BY id")]
    assert [preview.sync_id, refused.value.sync_id, applied.sync_id] == ids
    assert ids == list(range(ids[0], ids[0] + 3))
