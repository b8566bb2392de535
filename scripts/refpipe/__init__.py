"""A minimal pipeline of MPG's design, written without MPG code: the yardstick of issue 15.

Three kinds of process on loopback: a sender (SQLite Outbox → sealed XML batches over
HTTPS), a server (its own SQLite queue, long polls) and a receiver (batches → SQLite Inbox,
then an ack, which makes the server queue a receipt that the sender turns into State 29).
See docs/benchmarks.md, "Throughput against a reference pipeline (issue 15)".
"""
