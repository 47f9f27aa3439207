"""The ``jaxdiffim`` command (:func:`~jaxdiffim.cli.main.main`).

Subcommands: subtract, config, match-psf, demo.
"""
