"""kdlib: the library behind kdflow's stages. Importable and testable without Snakemake."""

__version__ = "0.1.0"
