"""The vertical protocol ``hetero-lr/1``: its round on the engine, its data parties, its audit."""
