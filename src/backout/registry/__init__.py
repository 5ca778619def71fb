"""The registry: immutable release manifests and the content-addressed artifacts they name.

A release (``model@version``) is registered once and never changes; its artifacts live in
a blob store under their SHA-256 and are verified on every read: a local folder
(``artifacts``) or S3-compatible object storage read through a per-host cache
(``objectstore``, ``cache``). Known-good marks,
quarantine and deletion are recorded in the audit log. ``signing`` holds the trusted
Ed25519 keys and the signatures over manifest digests that a policy may require.
"""
