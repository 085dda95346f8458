"""Studies layer: experiments built from everything below. The built-in demonstration
(``demo``), grids of trained SAEs measured at one tolerance (``sweep``), the feature-splitting
toy of the write-up (``splitting``) and their figures (``plots``, matplotlib imported only
here). Imports any lower layer; only the CLI imports it. Nothing is imported at package level,
so that ``import mdlsae.studies.demo`` does not load matplotlib.
"""
