"""The music model: codec, starter corpus, diffusion pipeline, training, registry.

Importing the package is cheap (no torch): the CLI and the registry use it without loading
the model stack.
"""
