"""Deterministic snapshot generator: a base day and a "next day" of patients and payments.

Records are written straight to disk as they are drawn, so memory stays flat
at any size. The same (size, seed) always gives the same bytes: each stream
has its own seeded generator, and the next day re-draws the base stream in
lockstep and applies its own (separately seeded) changes to it.

    python -m bench.generate --size M --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 2
IDS = ("uuid", "numeric")  # the id styles: UUID-like strings (default), or short numbers
# A fixed odd multiplier: number -> number * K mod 2**128 is a bijection, so ids stay unique.
_UUID_MULTIPLIER = 0x9E3779B97F4A7C15F39CC0605CEDC835
_UUID_MASK = (1 << 128) - 1
DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_SEED = 1

ORPHAN_RATE = 0.01  # payments whose patient is not in the patients file
CHANGED_RATE = 0.05  # next day: rows whose replicated fields change
DELETED_RATE = 0.02  # next day: rows missing from the snapshot
NEW_RATE = 0.03  # next day: rows that were not there before
REPOINT_RATE = 0.10  # of the changed payments: the ones moved to another patient


@dataclass(frozen=True)
class Size:
    name: str
    patients: int
    payments: int


SIZES = {
    "S": Size("S", 10_000, 50_000),
    "R": Size("R", 100_000, 300_000),  # both first loads take the bulk path (reads during them)
    "M": Size("M", 100_000, 1_000_000),
    "L": Size("L", 1_000_000, 10_000_000),
}

# Name pools cover what upstream data really holds: non-ASCII letters, commas,
# quotes, apostrophes, backslashes, a tab (escaped by COPY) and astral-plane characters.
FIRST_NAMES = (
    "Rick", "Pris", "Roy", "Eldon", "Rachael", "Leon", "Zhora", "J.F.", "Gaff", "Holden",
    "Ana", "José", "Zoë", "Chloé", "Søren", "Łukasz", "Ngọc Anh", "Anna-Lena", "Renée", "Ólafur",
    "Иван", "Анна", "محمد", "李", "さくら", "Jean-Luc", "Mary Ann", "D'Arcy", 'Robert "Bob"', "Eve",
    "Mateo", "Siobhán", "Bjørn", "Ewa", "Kwame", "Aarav", "Fatma", "Nguyễn", "Zoltán", "Ingrid",
    "Liam", "Olivia", "Noah", "Emma", "Amelia", "Lucas", "Mia", "Ethan", "Sofia", "Hugo",
)  # fmt: skip
LAST_NAMES = (
    "Deckard", "Stratton", "Batty", "Tyrell", "Sebastian", "Kowalski", "Bryant", "Holden", "Luv", "Wallace",
    "O'Brien", "Smith, Jr.", "Doe, Jane", 'Johnson "JJ"', "Back\\slash", "García Márquez", "Müller", "Núñez",
    "D'Angelo", "van der Berg", "Ørsted", "Żółć", "Ødegaard", "Straße", "Dvořák", "Şahin", "Nakamura 中村",
    "Иванова", "Al-Fulan", "Tab\tSeparated", "Smith", "Jones", "Brown", "Taylor", "Wilson", "Davies",
    "Evans", "Thomas", "Roberts", "Walker", "Wright", "Thompson", "White", "Hughes", "Edwards", "Green",
    "Hall", "Wood", "Harris", "Lewis", "Martin", "Jackson", "Clarke", "Clark", "Turner", "Hill", "Scott 🙂",
)  # fmt: skip
MIDDLE_NAMES = ("A.", "B", "Marie", "José", "de la Cruz", "O'Neil", "Jr., III", "Ü", "\\", "Jean-Paul", "Lee")

_ABSENT = object()  # middleName key left out of the record
_DOB_FIRST = date(1920, 1, 1).toordinal()
_DOB_SPAN = date(2024, 12, 31).toordinal() - _DOB_FIRST
_FUTURE_FIRST = date(2056, 1, 1).toordinal()  # upstream has birth dates in the future too


def _json_text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


_FIRST_JSON = tuple(map(_json_text, FIRST_NAMES))
_LAST_JSON = tuple(map(_json_text, LAST_NAMES))
_MIDDLE_JSON = tuple(map(_json_text, MIDDLE_NAMES))


def _numeric_id_json(number: int) -> str:
    # Ids arrive as JSON strings or integers; about 2 % are integers here.
    return str(number) if number % 50 == 7 else f'"{number}"'


def _uuid_id_json(number: int) -> str:
    # 36 characters like a UUID, as many external systems use; a scrambled bijection of the number.
    digits = f"{number * _UUID_MULTIPLIER & _UUID_MASK:032x}"
    return f'"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"'


_ID_JSON = {"uuid": _uuid_id_json, "numeric": _numeric_id_json}


def external_id(number: int, ids: str = "uuid") -> str:
    """The external id the generator gives patient (or payment) `number` (from 1), as text."""
    return _ID_JSON[ids](number).strip('"')


# A patient is (id, first index, last index, middle) with middle an index into
# MIDDLE_NAMES, None (JSON null) or _ABSENT; dob is an ISO date string.
Patient = list[Any]


def _draw_patient(rng: random.Random, number: int) -> Patient:
    rand = rng.random
    kind = rand()
    middle: Any = _ABSENT if kind < 0.3 else None if kind < 0.4 else int(rand() * len(MIDDLE_NAMES))
    first_day = _FUTURE_FIRST if rand() < 0.001 else _DOB_FIRST
    dob = date.fromordinal(first_day + int(rand() * _DOB_SPAN)).isoformat()
    return [number, int(rand() * len(FIRST_NAMES)), int(rand() * len(LAST_NAMES)), middle, dob]


def _patient_json(patient: Patient, id_json: Callable[[int], str]) -> str:
    number, first, last, middle, dob = patient
    if middle is _ABSENT:
        middle_part = ""
    elif middle is None:
        middle_part = ',"middleName":null'
    else:
        middle_part = ',"middleName":' + _MIDDLE_JSON[middle]
    return (
        f'{{"firstName":{_FIRST_JSON[first]},"lastName":{_LAST_JSON[last]}{middle_part},'
        f'"dateOfBirth":"{dob}","externalId":{id_json(number)}}}'
    )


def _change_patient(rng: random.Random, patient: Patient) -> Patient:
    changed = list(patient)
    field = int(rng.random() * 3)
    if field == 0:
        changed[1] = (patient[1] + 1 + int(rng.random() * (len(FIRST_NAMES) - 1))) % len(FIRST_NAMES)
    elif field == 1:
        changed[2] = (patient[2] + 1 + int(rng.random() * (len(LAST_NAMES) - 1))) % len(LAST_NAMES)
    elif patient[3] is None or patient[3] is _ABSENT:
        changed[3] = int(rng.random() * len(MIDDLE_NAMES))
    else:
        changed[3] = None if rng.random() < 0.5 else _ABSENT
    return changed


# A payment is (id, amount in cents, patient number, amount written as a JSON integer).
Payment = list[Any]


def _draw_amount(rng: random.Random) -> tuple[int, bool]:
    rand = rng.random
    cents = 1 + int(rand() ** 3 * 500_000)
    kind = rand()
    if kind < 0.05:  # whole amounts, some of them written as JSON integers ("amount": 25)
        return max(cents // 100, 1) * 100, kind < 0.01
    if kind < 0.055:  # refunds
        return -cents, False
    return cents, False


def _draw_patient_number(rng: random.Random, known: int, orphan_base: int, orphan_soon: int) -> int:
    """A skewed pick: low numbers get many payments, the tail few; about 1 % are orphans."""
    if rng.random() < ORPHAN_RATE:
        # Half the orphans wait for a patient the next day brings, half for one that never comes.
        if rng.random() < 0.5 and orphan_soon:
            return known + 1 + int(rng.random() * orphan_soon)
        return orphan_base + int(rng.random() * known)
    return 1 + int(rng.random() ** 2 * known)


def _payment_json(payment: Payment, id_json: Callable[[int], str]) -> str:
    number, cents, patient, as_int = payment
    if as_int:
        amount = str(cents // 100)
    else:
        sign = "-" if cents < 0 else ""
        whole, part = divmod(abs(cents), 100)
        amount = f"{sign}{whole}.{part:02d}"
    return f'{{"amount":{amount},"patientId":{id_json(patient)},"externalId":{id_json(number)}}}'


class _Generator:
    """The four streams of one (size, seed)."""

    def __init__(self, size: Size, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.new_patients_expected = round(size.patients * NEW_RATE)
        self.orphan_base = 10 * size.patients + 1  # far above any patient number ever generated
        self.counts: dict[str, dict[str, int]] = {}

    def _rng(self, stream: str) -> random.Random:
        return random.Random(f"paysync-bench:{GENERATOR_VERSION}:{self.seed}:{stream}")

    def base_patients(self) -> Iterator[Patient]:
        rng = self._rng("patients")
        for number in range(1, self.size.patients + 1):
            yield _draw_patient(rng, number)

    def base_payments(self) -> Iterator[Payment]:
        rng = self._rng("payments")
        known = self.size.patients
        for number in range(1, self.size.payments + 1):
            cents, as_int = _draw_amount(rng)
            patient = _draw_patient_number(rng, known, self.orphan_base, self.new_patients_expected)
            yield [number, cents, patient, as_int]

    def next_patients(self) -> Iterator[Patient]:
        rng = self._rng("patients-next")
        counts = self.counts.setdefault("patients", {"changed": 0, "deleted": 0, "new": 0, "rows": 0})
        new_number = self.size.patients + 1
        for patient in self.base_patients():
            draw = rng.random()
            if draw < DELETED_RATE:
                counts["deleted"] += 1
            elif draw < DELETED_RATE + CHANGED_RATE:
                counts["changed"] += 1
                yield _change_patient(rng, patient)
            else:
                yield patient
            if rng.random() < NEW_RATE:
                counts["new"] += 1
                yield _draw_patient(rng, new_number)
                new_number += 1

    def next_payments(self) -> Iterator[Payment]:
        rng = self._rng("payments-next")
        counts = self.counts.setdefault("payments", {"changed": 0, "deleted": 0, "new": 0, "rows": 0})
        known = self.size.patients + self.new_patients_expected
        new_number = self.size.payments + 1
        for payment in self.base_payments():
            draw = rng.random()
            if draw < DELETED_RATE:
                counts["deleted"] += 1
            elif draw < DELETED_RATE + CHANGED_RATE:
                counts["changed"] += 1
                number, cents, patient, _ = payment
                delta = 1 + int(rng.random() * 10_000)
                cents = cents + delta if cents < 0 or rng.random() < 0.5 or cents <= delta else cents - delta
                if rng.random() < REPOINT_RATE:
                    patient = 1 + (patient + int(rng.random() * known)) % known
                yield [number, cents, patient, False]
            else:
                yield payment
            if rng.random() < NEW_RATE:
                counts["new"] += 1
                cents, as_int = _draw_amount(rng)
                patient = _draw_patient_number(rng, known, self.orphan_base, 0)
                yield [new_number, cents, patient, as_int]
                new_number += 1


def _write_array(path: Path, lines: Iterator[str]) -> int:
    """Write the records as a JSON array, one record a line; returns how many."""
    count = 0
    with path.open("w", encoding="utf-8", newline="\n", buffering=1 << 20) as out:
        out.write("[")
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) == 10_000:
                out.write(("," if count else "") + "\n" + ",\n".join(batch))
                count += len(batch)
                batch = []
        if batch:
            out.write(("," if count else "") + "\n" + ",\n".join(batch))
            count += len(batch)
        out.write("\n]\n")
    return count


@dataclass(frozen=True)
class Dataset:
    """The generated files of one (size, seed): base and next day of both entities."""

    directory: Path
    manifest: dict[str, Any]

    def path(self, entity: str, day: str = "base") -> Path:
        return self.directory / (f"{entity}.json" if day == "base" else f"{entity}.next.json")


def generate(size: Size, seed: int, directory: Path, ids: str = "uuid") -> Dataset:
    """Write the four snapshot files of (size, seed) into `directory` (created), with
    `ids` ("uuid" or "numeric") external ids."""
    patient_json = partial(_patient_json, id_json=_ID_JSON[ids])
    payment_json = partial(_payment_json, id_json=_ID_JSON[ids])
    directory.mkdir(parents=True, exist_ok=True)
    generator = _Generator(size, seed)
    dataset = Dataset(directory, {})
    base = {
        "patients": _write_array(dataset.path("patients"), map(patient_json, generator.base_patients())),
        "payments": _write_array(dataset.path("payments"), map(payment_json, generator.base_payments())),
    }
    rows = _write_array(dataset.path("patients", "next"), map(patient_json, generator.next_patients()))
    generator.counts["patients"]["rows"] = rows
    rows = _write_array(dataset.path("payments", "next"), map(payment_json, generator.next_payments()))
    generator.counts["payments"]["rows"] = rows
    manifest = {
        "generator": GENERATOR_VERSION,
        "size": size.name,
        "seed": seed,
        "ids": ids,
        "base": base,
        "next": generator.counts,
        "bytes": {path.name: path.stat().st_size for path in sorted(directory.glob("*.json"))},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Dataset(directory, manifest)


def ensure_dataset(size: Size, seed: int = DEFAULT_SEED, data_dir: Path = DATA_DIR, ids: str = "uuid") -> Dataset:
    """The cached files of (size, seed, ids), generated first when missing."""
    name = f"{size.name}-{size.patients}x{size.payments}-seed{seed}-{ids}-v{GENERATOR_VERSION}"
    directory = data_dir / name
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        return Dataset(directory, json.loads(manifest_path.read_text()))
    partial = directory.with_name(directory.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    generate(size, seed, partial, ids)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return Dataset(directory, json.loads(manifest_path.read_text()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="M")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--ids", choices=IDS, default="uuid", help="external id style (default: uuid)")
    args = parser.parse_args(argv)
    dataset = ensure_dataset(SIZES[args.size], args.seed, ids=args.ids)
    print(dataset.directory)
    print(json.dumps(dataset.manifest, indent=2))


if __name__ == "__main__":
    main()
