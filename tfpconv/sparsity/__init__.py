"""The sparsity math, NumPy only: constraint sets, projections, allocation, schedules, ADMM."""
