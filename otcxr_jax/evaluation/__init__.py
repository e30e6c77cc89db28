"""What an evaluation computes: AUC and Dice metrics, frozen features, the linear probe, weighted
kNN, localisation scores of heatmaps, the fine-tuning classifier and its score files. Tables, plots
and reports of the results are ``otcxr_jax.reporting``'s."""
