"""Incident reports: what happened in one rollback, built from the store.

``builder`` gathers the incident (timeline, decisions, evidence, telemetry) into the
``model``; ``markdown``, ``html`` and ``plots`` render it for people, and ``writer`` puts
the page and the summary in a folder.
"""
