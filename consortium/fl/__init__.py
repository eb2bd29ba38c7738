"""Federated learning: the models members train, their checks, aggregation and metrics."""
