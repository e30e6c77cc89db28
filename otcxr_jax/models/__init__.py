"""Encoders that return dense feature maps, CV-SIM, and heads."""
