"""Vertical federated learning: hetero logistic regression's guest, host and arbiter parts."""
