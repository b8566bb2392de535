"""The service host: runs the gateway or the server until told to stop.

It sits above the daemons it starts (``mpg.gateway``, ``mpg.server``), which in turn
use :mod:`mpg.ops`; only :mod:`mpg.cli` is above it. :mod:`~mpg.service.host` is the
platform-neutral body, :mod:`~mpg.service.windows` the thin pywin32 shell.
"""
