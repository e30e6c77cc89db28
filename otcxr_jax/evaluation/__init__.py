"""Metrics, probes and reports with plots."""
