"""Chain access: backends, compiled artifacts, transactions and revert decoding."""
