"""Named failpoints, so crash tests can kill a process at an exact step.

A failpoint is armed by listing its name in the ``MPG_FAILPOINTS`` environment variable
(comma-separated). When an armed failpoint is reached the process kills itself with
SIGKILL: no cleanup, no flush, exactly like a power cut. Unarmed failpoints cost one
set lookup. Production configurations never set the variable.

Every failpoint is named here and listed in :data:`POINTS` (``docs/operations.md``
describes each); the crash test kills a process at each of them in turn, so a new
point added to :data:`POINTS` is tested without further ado.

``NAME:stop`` arms a failpoint that instead stops the process (SIGSTOP) the first time
it is reached, so a test can change the world at exactly that step and then let the
process go on (SIGCONT).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

ENV_VAR: Final = "MPG_FAILPOINTS"

# The sending gateway's outbound walk: after each commit, and between the server's
# answer and the gateway's record of it.
OUTBOUND_CLAIMED_11: Final = "outbound.claimed_11"  # 10 -> 11 and OutboxAttachment rows
OUTBOUND_CLAIMED_12: Final = "outbound.claimed_12"  # 10 -> 12 (no attachments)
ATTACHMENT_BEFORE_OPEN: Final = "attachment.before_open"  # path checked, file not yet opened
OUTBOUND_UPLOADED_12: Final = "outbound.uploaded_12"  # 11 -> 12 (files on the server)
OUTBOUND_SUBMITTED: Final = "outbound.submitted"  # the server accepted; nothing recorded
OUTBOUND_AT_19: Final = "outbound.at_19"  # 12 -> 19 of a message served at once
OUTBOUND_AT_20: Final = "outbound.at_20"  # 12 -> 19 -> 20
# The receiving side: attachment files, Inbox rows, receipts (20 -> 29), then the ack.
INBOUND_AFTER_FILES: Final = "inbound.after_files"
INBOUND_AFTER_STORE: Final = "inbound.after_store"
INBOUND_AFTER_RECEIPTS: Final = "inbound.after_receipts"
# The folders: a drop file's row committed before the file moves; a file written
# before the writer's position (MpgExport) moves past it.
DROPFOLDER_AFTER_INSERT: Final = "dropfolder.after_insert"
INBOUND_FOLDER_WRITTEN: Final = "folders.inbound_written"
RECEIPT_FOLDER_WRITTEN: Final = "folders.receipt_written"
# The server: after a commit before its answer, and inside transactions (rolled back).
SERVER_SUBMIT_COMMITTED: Final = "server.submit_committed"
SERVER_BEFORE_RECEIPTS: Final = "server.before_receipts"  # served counted, no receipt yet
SERVER_ACK_COMMITTED: Final = "server.ack_committed"
SERVER_RECALL_WITHDRAWN: Final = "server.recall_withdrawn"  # entries withdrawn, no RECALL yet
# The push worker: jobs claimed (leased), nothing sent; sent, outcome not recorded.
PUSH_CLAIMED: Final = "push.claimed"
PUSH_SENT: Final = "push.sent"

#: Every failpoint, in the order a message meets them.
POINTS: Final = (
    DROPFOLDER_AFTER_INSERT,
    OUTBOUND_CLAIMED_11,
    OUTBOUND_CLAIMED_12,
    ATTACHMENT_BEFORE_OPEN,
    OUTBOUND_UPLOADED_12,
    SERVER_SUBMIT_COMMITTED,
    OUTBOUND_SUBMITTED,
    OUTBOUND_AT_19,
    OUTBOUND_AT_20,
    SERVER_RECALL_WITHDRAWN,
    INBOUND_AFTER_FILES,
    INBOUND_AFTER_STORE,
    INBOUND_FOLDER_WRITTEN,
    SERVER_BEFORE_RECEIPTS,
    SERVER_ACK_COMMITTED,
    INBOUND_AFTER_RECEIPTS,
    RECEIPT_FOLDER_WRITTEN,
)
#: The push worker's failpoints: reached only when a device is pushed, so a round of
#: gateway messages (tests/acceptance/test_crash_points.py) never meets them; the
#: push crash test (tests/acceptance/test_push_crash.py) kills the server at each.
PUSH_POINTS: Final = (PUSH_CLAIMED, PUSH_SENT)

_NAMES: Final = [name.strip() for name in os.environ.get(ENV_VAR, "").split(",") if name.strip()]
_ARMED: Final = frozenset(name for name in _NAMES if not name.endswith(":stop"))
_STOP_ONCE: Final = {name.removesuffix(":stop") for name in _NAMES if name.endswith(":stop")}


def reach(name: str) -> None:
    """Die here, at once, if the failpoint ``name`` is armed (stop, if armed ``:stop``)."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
    if name in _STOP_ONCE:
        _STOP_ONCE.discard(name)
        # Sent to this very thread, so it stops before it goes on: a signal to the
        # process may be taken by another thread while this one runs a little further.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
