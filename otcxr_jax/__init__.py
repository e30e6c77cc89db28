"""OTCXR-JAX: optimal-transport self-supervised learning for chest X-rays in JAX/Flax.

Reimplementation of OTCXR (Gorade, Singh, Mishra, WACV 2025, arXiv 2404.11868): dense feature
maps of two augmented views are aligned by entropic optimal transport, with a cross-viewpoint
attention block (CV-SIM) and variance/covariance regularisation.
"""

__version__ = "0.1.0"
