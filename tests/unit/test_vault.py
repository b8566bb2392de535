"""Account pseudonyms and sealed columns (mpg.server.vault)."""

from __future__ import annotations

import re

import pytest

from mpg import errors
from mpg.server import vault
from mpg.wire import atrest

MASTER = bytes(range(32))
RING = atrest.Keyring({"k1": bytes(32)}, "k1")
ROTATED = atrest.Keyring({"k1": bytes(32), "k2": bytes(range(1, 33))}, "k2")


def test_a_pseudonym_hides_the_name_and_survives_a_data_key_rotation() -> None:
    before = vault.Vault(MASTER, RING).account_id("anna.meier@example.com")
    assert re.fullmatch(r"a-[0-9a-f]{40}", before)
    assert "anna" not in before
    assert vault.Vault(MASTER, ROTATED).account_id("anna.meier@example.com") == before
    assert vault.Vault(bytes(32), RING).account_id("anna.meier@example.com") != before
    assert vault.Vault(MASTER, RING).account_id("bob@example.com") != before


def test_a_registered_devices_opaque_id_is_kept_and_a_serial_is_not() -> None:
    names = vault.Vault(MASTER, RING)
    opaque = "dev-" + "0123456789abcdef" * 2
    assert names.account_id(opaque) == opaque
    assert names.account_id("SN-4711").startswith("a-")
    assert names.account_id("dev-" + "0123456789ABCDEF" * 2).startswith("a-")


def test_a_sealed_value_opens_only_in_its_place_and_falls_back_to_an_older_clear_one() -> None:
    names = vault.Vault(MASTER, RING)
    sealed = names.seal("Quarterly review", "TransmitQueue", "SubjectEnc", "m-1")
    assert sealed is not None
    assert b"Quarterly" not in sealed
    assert names.unseal(sealed, "TransmitQueue", "SubjectEnc", "m-1") == "Quarterly review"
    with pytest.raises(errors.AtRestError):
        names.unseal(sealed, "TransmitQueue", "SubjectEnc", "m-2")
    assert names.seal(None, "TransmitQueue", "SubjectEnc", "m-1") is None
    assert names.unseal(None, "TransmitQueue", "SubjectEnc", "m-1", "older") == "older"


def test_a_keyword_index_ignores_case_and_spaces_and_outlives_a_data_key_rotation() -> None:
    index = vault.Vault(MASTER, RING).keyword_index(" Flood ")
    assert re.fullmatch(r"[0-9a-f]{64}", index)
    assert vault.Vault(MASTER, ROTATED).keyword_index("flood") == index
    assert vault.Vault(bytes(32), RING).keyword_index("flood") != index
    assert vault.Vault(MASTER, RING).keyword_index("fire") != index
    # Not the account pseudonym of the same text: another key.
    assert vault.Vault(MASTER, RING).account_id("flood")[2:] not in index
