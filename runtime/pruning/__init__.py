"""Circuit pruning: node masks, ablation, discretisation and edge counting."""
