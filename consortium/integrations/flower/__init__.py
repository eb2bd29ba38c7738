"""Flower (``flwr`` 1.42): members as SuperNodes, the coordinator as a ServerApp, the ledger's
protocol messages carried in Flower messages (:mod:`.transport`, :mod:`.client`)."""
