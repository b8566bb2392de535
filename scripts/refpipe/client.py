"""What the sender and the receiver share: their HTTPS client and their command line."""

from __future__ import annotations

import argparse
import pathlib
import ssl

import httpx

POLL = 0.05  # how often an idle sender looks at its Outbox, seconds


def args() -> argparse.Namespace:
    """root, port, and own name of a sender or receiver."""
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=pathlib.Path)
    parser.add_argument("port", type=int)
    parser.add_argument("name")
    return parser.parse_args()


def client(root: pathlib.Path, port: int) -> httpx.Client:
    """An HTTPS client that trusts only root/ca.pem and carries the bearer token."""
    return httpx.Client(
        base_url=f"https://127.0.0.1:{port}",
        verify=ssl.create_default_context(cafile=str(root / "ca.pem")),
        headers={"authorization": "Bearer " + (root / "token").read_text()},
        timeout=60,
    )
