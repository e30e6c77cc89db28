"""Tests of the real-dataset TFDS builders, with generators of fixture manual directories."""
