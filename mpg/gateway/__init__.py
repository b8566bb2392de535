"""The gateway (the documents' MPG): Outbox -> push server -> Inbox."""
