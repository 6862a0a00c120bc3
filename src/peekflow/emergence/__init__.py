"""Emergence of intermediate visual patterns (Li, Wang, Zhang, NeurIPS 2021): per-layer sample embeddings, importance
weights, regional embeddings, knowledge points and adversarial trajectories."""
