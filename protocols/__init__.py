"""Ready-made protocols built only on the public API of ``framework``."""
