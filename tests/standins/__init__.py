"""Stand-ins for the push services, run on loopback with their real protocols (docs/push.md)."""
