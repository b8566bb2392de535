"""The ``mpg`` command line: one module per command or command group (click)."""
