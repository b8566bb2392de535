"""Push notifications: providers behind one interface, token hygiene, the message file.

docs/push.md explains the whole; ``base.Provider`` is the interface a job worker drives.
"""
