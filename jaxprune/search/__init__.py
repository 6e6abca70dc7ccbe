"""Architecture search under parameter / memory budgets over pruning targets."""
