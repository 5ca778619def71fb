"""Proof that a release can take traffic: contracts, compatibility, consumers, replay.

Contracts are inferred from model signatures and compiled to validators; two contracts are
diffed field by field and against every registered consumer; recorded production requests
are captured (scrubbed, bounded) and replayed against a release and compared with its
performance envelope. The controller runs these as pre-flight gates.
"""
