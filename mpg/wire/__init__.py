"""The wire layer: pure builders and parsers of everything that crosses a boundary.

Nothing in this package does I/O or keeps global mutable state: payload XML
(:mod:`~mpg.wire.payloads`), sealed envelopes (:mod:`~mpg.wire.envelope`), credentials
and key wrapping (:mod:`~mpg.wire.keys`), the Content formats of reference §3
(:mod:`~mpg.wire.content`) and recipient lists (:mod:`~mpg.wire.recipients`). Every
XML document is parsed by :mod:`~mpg.wire.xmlsafe`.
"""
