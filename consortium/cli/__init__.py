"""The consortium command line, one click group per noun."""
