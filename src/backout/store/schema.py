"""The store's tables, as SQLAlchemy Core metadata.

Alembic migrations under ``migrations/`` create these; a test checks that the migrated
database and this metadata never drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per registered release. ``manifest`` never changes; the other columns are the
# release's status (served, known-good, quarantined, bad), which does. A release is *bad*
# when ``bad`` holds the evidence against it (a failed gate or trigger that rolled traffic
# back from it, or a person's mark): no rollback may target it and deploying it needs an
# override. ``bad_operation`` is the rollback that left it (NULL for a mark by hand).
releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("version", String(128), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("content_digest", String(64), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("first_served_at", DateTime(timezone=True), nullable=True),
    Column("known_good", Boolean, nullable=False, default=False),
    Column("quarantined", Text, nullable=True),
    Column("bad", Text, nullable=True),
    Column("bad_operation", Integer, nullable=True),
    Column("bad_at", DateTime(timezone=True), nullable=True),
    Column("bad_by", String(128), nullable=True),
    UniqueConstraint("model", "version"),
)

# The history of a release's marks: known-good (mark | unmark) and bad (bad | clear-bad);
# the current state is releases.known_good and releases.bad.
release_marks = Table(
    "release_marks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("version", String(128), nullable=False),
    Column("action", String(16), nullable=False),  # mark | unmark | bad | clear-bad
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(
        ["model", "version"], ["releases.model", "releases.version"], ondelete="CASCADE"
    ),
    Index("ix_release_marks_model_version", "model", "version"),
)

# The append-only, hash-chained audit log. ``hash`` covers every other column and the
# previous hash, so an edited, removed or reordered row breaks the chain.
events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("model", String(63), nullable=True),
    Column("kind", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("data", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_events_model_seq", "model", "seq"),
)

# Small named values: the head of the event chain, the route-table generation, leases.
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("number", BigInteger, nullable=False, default=0),
)

# The live state of each model: its route table (weights, shadow, pins) and its version.
deployments = Table(
    "deployments",
    metadata,
    Column("model", String(63), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("routes", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False),
)

# Per-release telemetry batches, about a second each, flushed by gateway workers.
telemetry = Table(
    "telemetry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("version", String(128), nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("worker", String(64), nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_telemetry_model_start", "model", "start"),
)

# One row per rollout or rollback (an incident when it is a rollback). At most one row per
# model has ended_at NULL: the operation in progress. Its phase, step, weights and counters
# are everything the controller needs to resume after a crash.
operations = Table(
    "operations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("kind", String(16), nullable=False),  # rollout | rollback
    Column("phase", String(32), nullable=False),
    Column("step", Integer, nullable=False),
    Column("stable", String(128), nullable=False),  # what served before the operation
    Column("target", String(128), nullable=False),  # candidate (rollout) or rollback target
    Column("weights", JSON, nullable=False),  # version -> percent, what should be live
    Column("state", JSON, nullable=False),  # counters, paused-from, trigger, escalation level
    Column("policy", JSON, nullable=False),  # the effective policy, frozen at start
    Column("reason", Text, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("step_started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("outcome", String(32), nullable=True),
    Index("ix_operations_model_id", "model", "id"),
    Index(
        "uq_operations_active_model",
        "model",
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    ),
)

# The policy each model runs by (set by `backout deploy --policy` or `backout policy set`).
policies = Table(
    "policies",
    metadata,
    Column("model", String(63), primary_key=True),
    Column("policy", JSON, nullable=False),
    Column("source", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Frozen models: traffic changes halt until an explicit unfreeze.
freezes = Table(
    "freezes",
    metadata,
    Column("model", String(63), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("at", Float, nullable=False),
    Column("operation_id", Integer, nullable=True),
)

# Leases: one controller acts per store at a time; the holder renews, others wait.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
    # The fencing token: one more each time the lease passes to another holder.
    Column("generation", Integer, nullable=False, server_default="1"),
    Column("acquired_at", Float, nullable=True),  # when the holder took it
)

# Sampled live requests and what answered them, for replay against a rollback target.
# Bounded per model: the gateway trims the oldest rows beyond the policy's max_rows.
captures = Table(
    "captures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("version", String(128), nullable=False),
    Column("at", Float, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("protocol", String(8), nullable=False),  # json | oip
    Column("latency_ms", Float, nullable=False),
    Column("request", Text, nullable=False),  # JSON text, redacted as the policy says
    Column("response", Text, nullable=False),  # JSON text
    Column("labels", Text, nullable=True),  # JSON text, when callers sent ground truth
    Index("ix_captures_model_at", "model", "at"),
    Index("ix_captures_request_id", "request_id"),
)

# A release's performance envelope: what it did while it last served production.
envelopes = Table(
    "envelopes",
    metadata,
    Column("model", String(63), primary_key=True),
    Column("version", String(128), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("recorded_at", Float, nullable=False),
)

# Registered consumers of a model: the fields each sends and reads.
consumers = Table(
    "consumers",
    metadata,
    Column("model", String(63), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("contract", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Faults injected by drills: the gateway applies them to one release, from start to end.
faults = Table(
    "faults",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("version", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # latency | errors | nan | crash
    Column("value", Float, nullable=False),  # seconds added, or the share of requests hit
    Column("start_at", Float, nullable=False),
    Column("end_at", Float, nullable=False),
    Column("drill_id", Integer, nullable=True),
)

# Drill results, kept so rollback readiness can be compared over time.
drills = Table(
    "drills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("fault", String(64), nullable=False),
    Column("release", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("result", JSON, nullable=False),
)

# The transactional outbox: a notification written in the same transaction as the event
# that caused it, then delivered at least once by the controller's delivery worker. ``id``
# is the idempotency key receivers see, so a delivery repeated after a crash is recognised.
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("model", String(63), nullable=False),
    Column("kind", String(16), nullable=False),  # the notice's kind
    Column("channel", String(8), nullable=False),  # webhook | email
    Column("target", Text, nullable=False),  # the webhook URL or the e-mail address
    Column("notice", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("done_at", Float, nullable=True),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)

# Public Ed25519 keys an admin trusts to sign releases (and event-log checkpoints).
# ``id`` is derived from the key itself; a removed key stays, with removed_at, for history.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("public_key", String(64), nullable=False),  # the 32 raw bytes, hex
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(128), nullable=False),
    Column("removed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("name"),
)

# Signatures over release manifest digests, one per (release, key).
release_signatures = Table(
    "release_signatures",
    metadata,
    Column("model", String(63), primary_key=True),
    Column("version", String(128), primary_key=True),
    Column("key_id", String(16), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("signature", String(128), nullable=False),  # 64 bytes, hex
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("signed_by", String(128), nullable=False),
    ForeignKeyConstraint(
        ["model", "version"], ["releases.model", "releases.version"], ondelete="CASCADE"
    ),
)

# Where the event chain starts after pruning: the last pruned event's seq and hash, signed,
# so the remaining log verifies from a point nobody could have moved unnoticed.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("event_at", DateTime(timezone=True), nullable=False),
    Column("pruned", Integer, nullable=False),  # events removed by this pruning
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
)

# Control-API tokens. Only a SHA-256 of each token's secret is kept; ``id`` is the token's
# public prefix, so a token is found by it and then checked against the hash. ``grants`` is
# a list of {"role": ..., "models": [glob, ...]}. A revoked token stays, for history.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("grants", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("revoked_by", String(128), nullable=True),
)

# Actions a policy says need an approver's yes before they run: asked for by one person,
# decided by another (never the one who asked), then run as asked.
approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("action", String(32), nullable=False),  # deploy | promote | rollback
    Column("params", JSON, nullable=False),
    Column("why", Text, nullable=False),  # which rule of the policy asks for approval
    Column("requested_by", String(128), nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("status", String(16), nullable=False),  # pending | approved | denied | failed
    Column("decided_by", String(128), nullable=True),
    Column("decided_at", Float, nullable=True),
    Column("result", JSON, nullable=True),
    Index("ix_approvals_model_status", "model", "status"),
)

# Incidents: one per rollback (or freeze) of a model, open until resolved; at most one open
# per model. Its status follows the operation's phases; an incident commander adds updates.
incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(63), nullable=False),
    Column("operation_id", Integer, nullable=True),  # the operation that opened it
    Column("last_operation_id", Integer, nullable=True),  # the newest operation it follows
    Column("status", String(16), nullable=False),  # investigating|identified|monitoring|resolved
    Column("title", Text, nullable=False),  # public
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("resolved_at", Float, nullable=True),
    Index(None, "model", "resolved_at"),
)

# The updates of an incident, public text only in ``message``; ``detail`` is private.
incident_updates = Table(
    "incident_updates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("automatic", Boolean, nullable=False),
    Column("detail", JSON, nullable=False),
    ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
    Index(None, "incident_id", "id"),
)
