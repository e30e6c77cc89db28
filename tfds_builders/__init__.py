"""TFDS dataset builders: one package per dataset."""
