"""Incident reports: what happened in one rollback, built from the store.

``report`` gathers the incident (timeline, decisions, evidence, telemetry) into one model;
``markdown``, ``html`` and ``plots`` render it for people.
"""
