"""consortium: auditable federated learning anchored on an EVM ledger."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("consortium")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
