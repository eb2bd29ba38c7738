"""Cryptographic building blocks: keystores and EIP-712 signatures."""
