"""Engines run the same ServerApp and ClientApp objects: in process, or on Flower's Ray engine."""
