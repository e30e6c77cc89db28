"""Pure loss functions of arrays: OT alignment, variance/covariance, OTCXR and baselines."""
