"""Horizontal federated averaging (FedAvg): every participant trains the whole model on its
own rows, signs an update record, and the coordinator averages the accepted updates."""
