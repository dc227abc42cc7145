"""The contacts import's storage on SQLite and PostgreSQL: a number that is an
id of a contact now addressed by its BSUID updates that contact, and imports
larger than one transaction count every contact and opt-in."""

from __future__ import annotations

import time

from wahub.core.models import InboundMessage
from wahub.core.storage.contacts import IMPORT_BATCH, ImportedContact
from wahub.core.storage.store import Storage

PHONE, BSUID = "351912345678", "PT.1234567890ABCDEF"


async def test_a_contact_known_by_its_bsuid_is_found_by_its_phone(storage: Storage) -> None:
    message = InboundMessage(
        provider="meta",
        external_id="wamid.1",
        sender=BSUID,
        type="text",
        content={"text": {"body": "hi"}},
        timestamp=time.time(),
        identities={"bsuid": BSUID, "wa_id": PHONE},
    )
    record = await storage.messages.record_inbound(message)
    evidence = {"opt_in_source": "shop form"}

    counts = await storage.contacts.import_contacts(
        "meta", [ImportedContact(PHONE, name="Ana", tags=("vip",), opt_ins=(evidence,))], now=time.time()
    )

    assert (counts.created, counts.updated, counts.opted_in) == (0, 1, 1)
    contact = await storage.contacts.get(record.contact_id)
    assert contact is not None
    assert (contact["address"], contact["name"], contact["tags"]) == (BSUID, "Ana", ["vip"])
    assert {"kind": "phone", "value": PHONE} in contact["identities"]
    [event] = await storage.policy.ledger("meta", PHONE)
    assert (event["address"], event["evidence"]) == (BSUID, evidence)
    # The same opt-in again is not recorded twice.
    again = await storage.contacts.import_contacts(
        "meta", [ImportedContact(PHONE, opt_ins=(evidence,))], now=time.time()
    )
    assert (again.updated, again.opted_in) == (1, 0)


async def test_an_import_over_several_transactions_counts_everything(storage: Storage) -> None:
    phones = [f"3519100{index:05d}" for index in range(IMPORT_BATCH * 2 + 7)]
    imported = [ImportedContact(phone, language="pt-PT", opt_ins=({"opt_in_source": "list"},)) for phone in phones]

    counts = await storage.contacts.import_contacts("meta", imported, now=time.time())

    assert (counts.created, counts.updated, counts.opted_in) == (len(phones), 0, len(phones))
    page, _ = await storage.contacts.search("35191000", limit=5)
    assert [(row["address"], row["language"], row["language_source"]) for row in page] == [
        (phone, "pt-PT", "set") for phone in phones[:5]
    ]
    again = await storage.contacts.import_contacts("meta", imported[:10], now=time.time())
    assert (again.created, again.updated, again.opted_in) == (0, 10, 0)
