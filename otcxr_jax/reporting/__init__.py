"""Reports of runs: ``metrics.json`` and tables (``summary``), PNG figures (``plots``,
``figures``; the demo's transport plans and attention, ``visualize``), the demo's report
(``demo_report``) and one report of many evaluation runs (``runs``: ``python -m
otcxr_jax.reporting <workdir>... --out <dir>``, or mode ``report``).

Reporting sits above ``evaluation/`` (it reads its metrics and score files); nothing in
``evaluation/`` imports it.
"""
