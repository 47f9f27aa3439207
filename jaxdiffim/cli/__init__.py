"""The ``jaxdiffim`` command (:func:`~jaxdiffim.cli.main.main`): subtract, match-psf, demo."""
