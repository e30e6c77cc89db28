"""The session fixtures of tests/e2e/shared_runs.py, for every end-to-end module."""

from tests.e2e.shared_runs import cohort, cohort_finetuning, tiny_pretraining  # noqa: F401
