"""The ``mmdistill`` command line: a thin typer shell over the library (see :mod:`.main`)."""
