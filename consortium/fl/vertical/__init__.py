"""Vertical federated learning: private set intersection, Paillier, hetero LR."""
