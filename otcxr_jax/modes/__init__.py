"""What ``otcxr_jax.main`` runs for each ``config.mode``; each module has ``run(config, workdir)``."""
