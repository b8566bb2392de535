"""The alerting directory (issue 11, docs/devices.md): message groups and categories,
domains, registration codes, devices and their subscriptions, and the mailed codes
that prove an address. Each module is one kind of thing over the tables of
:mod:`mpg.server.tables`; the API (:mod:`mpg.server.api`) and the CLI call them.
"""
