"""Round protocols: what one round of a protocol does, between its parties.

A protocol supplies its roles, how one round runs over a message channel between the parties,
the typed round intent it hands to the engine, its signed record type and its audit checks;
the round engine (:mod:`consortium.orchestration.engine`) runs any of them and owns what is
the same for all: the write-ahead journal, anchoring, receipts, resume and pipelining.
"""
