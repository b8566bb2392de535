"""The reference pipeline's wire form: XML batches of AES-GCM sealed messages."""

from __future__ import annotations

import base64
import os
import sqlite3

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lxml import etree

BATCH = 100
SCHEMA = """
CREATE TABLE IF NOT EXISTS "Outbox" ("MessageId" INTEGER PRIMARY KEY, "TxMessageId" TEXT UNIQUE,
  "ReceiverList" TEXT, "Subject" TEXT, "Content" TEXT, "State" INTEGER, "Updated" TEXT);
CREATE INDEX IF NOT EXISTS "OutboxState" ON "Outbox" ("State");
CREATE TABLE IF NOT EXISTS "Inbox" ("MessageId" INTEGER PRIMARY KEY, "RxMessageId" TEXT UNIQUE,
  "Sender" TEXT, "Subject" TEXT, "Content" TEXT, "State" INTEGER, "Received" TEXT);
"""


def connect(path: str) -> sqlite3.Connection:
    """A SQLite connection in WAL with synchronous=NORMAL, as MPG's SQLite engine sets them."""
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def seal(key: bytes, tx: str, subject: str, content: str) -> bytes:
    """One message as XML, sealed with AES-GCM; the TxMessageId is the associated data."""
    msg = etree.Element("message", tx=tx)
    etree.SubElement(msg, "subject").text = subject
    etree.SubElement(msg, "content").text = content
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, etree.tostring(msg), tx.encode())


def open_sealed(key: bytes, tx: str, sealed: bytes) -> tuple[str, str]:
    """The subject and content of a sealed message (raises if it was tampered with)."""
    plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], tx.encode())
    msg = etree.fromstring(plain)
    return msg.findtext("subject") or "", msg.findtext("content") or ""


def batch_xml(items: list[tuple[str, str, bytes]]) -> bytes:
    """A batch of (id, peer, sealed) as XML."""
    root = etree.Element("batch")
    for ident, peer, sealed in items:
        etree.SubElement(root, "m", id=ident, peer=peer).text = base64.b64encode(sealed).decode()
    return etree.tostring(root)


def parse_batch(body: bytes) -> list[tuple[str, str, bytes]]:
    """The (id, peer, sealed) items of a batch."""
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    return [(m.get("id", ""), m.get("peer", ""), base64.b64decode(m.text or "")) for m in root]


def ids_xml(ids: list[str]) -> bytes:
    """A list of message ids (acks and receipts) as XML."""
    root = etree.Element("ids")
    for ident in ids:
        etree.SubElement(root, "id").text = ident
    return etree.tostring(root)


def parse_ids(body: bytes) -> list[str]:
    """The ids of an ids document."""
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    return [e.text or "" for e in root]
