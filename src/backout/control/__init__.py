"""The control layer: policies, the controller's state machine and what drives it.

An operation (a rollout or a rollback) moves through phases by one transition table;
``tick()`` re-reads the stored operation, re-applies its weights, asks the gates and
triggers, and moves at most one step. Here too: the policy (the runbook as YAML),
pre-flight checks before traffic moves, triggers, alerts, notifications (a transactional
outbox delivering webhooks and e-mail) and drills. It
moves traffic only through a ``TrafficRouter`` and reads telemetry only through a
``TelemetrySource``.
"""
