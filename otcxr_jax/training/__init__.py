"""One train loop for every mode; sharding; optimisers; checkpoints."""
