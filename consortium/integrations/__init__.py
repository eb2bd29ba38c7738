"""The ledger inside other federated-learning systems."""
