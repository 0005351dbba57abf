"""Discount codes: generation, uploads with duplicates, what is given back (pure)."""

from services.messaging.codes import _maybe_delivered
from services.messaging.domain.codes import ALPHABET, generate_codes, split_upload


def test_generated_codes_are_new_distinct_and_readable() -> None:
    taken = {"THX-AAAAAAAA"}
    codes = generate_codes("THX-", 500, taken=taken)
    assert len(codes) == len(set(codes)) == 500 and not taken & set(codes)
    assert all(c.startswith("THX-") and len(c) == 12 and set(c[4:]) <= set(ALPHABET)
               for c in codes)


def test_upload_keeps_order_and_reports_duplicates() -> None:
    assert split_upload(["B2", "A1", " B2 ", "", "C3", "A1", "A1"]) == (
        ["B2", "A1", "C3"], ["A1", "B2"])


def test_codes_of_an_unknown_outcome_are_not_released() -> None:
    assert _maybe_delivered("outcome unknown: SMTP connection lost mid-transaction; ...")
    assert not _maybe_delivered("gave up after 4 attempts: SMTP 451")
    assert not _maybe_delivered(None)
