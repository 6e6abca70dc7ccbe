"""Group-aware structured pruning: coupled-axis groups, masks, importance, materialization."""
