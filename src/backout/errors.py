"""Every error backout raises on purpose, in one tree.

The command line catches :class:`BackoutError`, prints its message on one line and exits
with its ``exit_code``; the HTTP layers map it to a status code with ``http_status``; the
controller records it as an event instead of crashing. Third-party exceptions are translated
at the boundary with ``raise ... from exc`` so callers only ever handle this tree.

    BackoutError
    ├── ConfigError                 bad settings, URLs, flags or files given by the user
    │   ├── StoreUnavailable        a store that cannot be reached or timed out (retriable)
    │   │   └── StoreMissing        no store where the URL points: `backout init` creates one
    │   ├── ArtifactStoreUnavailable an object store that is down, refuses or answers garbage (retriable)
    │   ├── PolicyError             a malformed policy file (field, value, line)
    │   ├── KeyFileError            a signing key file that is unreadable or not Ed25519
    │   └── UnsupportedByRouter     a policy that needs a capability its router lacks
    ├── ValidationError             a value that breaks the rules of the domain
    │   ├── InvalidVersion          a version that is neither semver nor a safe tag
    │   ├── InvalidContract         a contract that is not valid JSON Schema
    │   ├── InvalidTraffic          a route table that does not add up or names bad releases
    │   ├── SignatureInvalid        a release without the valid signature its policy requires
    │   └── ReleaseMarkedBad        deploying, rolling back to or routing to a release marked bad
    ├── NotFound                    an unknown model, release, incident or blob
    │   ├── ReleaseNotFound
    │   ├── ModelNotFound
    │   └── UnknownKey              a signing key that is not (or no longer) trusted
    ├── Conflict                    the request contradicts what the store already holds
    │   ├── ReleaseExists           model@version registered before with other content
    │   ├── ReleaseInUse            deleting a release that has served production traffic
    │   ├── OperationInProgress     a rollout or rollback is already running for the model
    │   └── Frozen                  the model is frozen; only an explicit unfreeze lifts it
    ├── IntegrityError              stored bytes no longer match their digest
    │   ├── ArtifactCorrupt         a blob whose bytes do not hash to its address
    │   └── AuditChainBroken        an event log whose hash chain does not verify
    ├── RouterError                 a traffic router that cannot be reached or refuses (retriable)
    ├── TelemetryUnavailable        a metric system (Prometheus) that cannot be read (retriable)
    ├── ArtifactError               a file to register that is missing or unreadable
    ├── RuntimeLoadError            a release that cannot be loaded into a predictor
    │   └── MlflowMissing           an MLflow release where MLflow is not installed
    └── ModelError                  a loaded release failed while predicting (500)
        └── UpstreamError           an HTTP upstream answered with an error or not at all (502)
            └── UpstreamTimeout     an HTTP upstream did not answer in time (504)
"""

from __future__ import annotations


class BackoutError(Exception):
    """Base of every error backout raises on purpose.

    ``retriable`` says whether the same call may succeed later without any change.
    """

    exit_code: int = 1
    http_status: int = 400
    retriable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(BackoutError):
    """Raised for settings, URLs, flags or files the user gave that cannot be used."""

    exit_code = 2


class StoreUnavailable(ConfigError):
    """Raised when a store cannot be opened, reached or answered in time.

    The message names the store (without its password) and the cause; retrying may pass.
    """

    http_status = 503
    retriable = True


class StoreMissing(StoreUnavailable):
    """Raised when no store exists where the URL points; only ``backout init`` creates one.

    Retriable: a store file moved away for a moment may come back.
    """


class ArtifactStoreUnavailable(ConfigError):
    """Raised when the artifact store (S3-compatible object storage) cannot be reached, refuses
    the request (no bucket, no credentials, access denied) or answers something that is not
    object storage. The message names the store and the endpoint; retrying may pass."""

    http_status = 503
    retriable = True


class PolicyError(ConfigError):
    """Raised for a malformed policy: names the field path, the value and the line."""

    http_status = 422


class KeyFileError(ConfigError):
    """Raised when a signing key file cannot be read or is not an Ed25519 key."""


class UnsupportedByRouter(ConfigError):
    """Raised when a policy needs a capability (pins, capture, ...) its router lacks."""

    http_status = 422


class ValidationError(BackoutError):
    """Raised for a value that breaks the rules of the domain."""

    http_status = 422


class ReleaseMarkedBad(ValidationError):
    """Raised when a release marked bad would be deployed without an override, or would be
    a rollback target. The message names the mark's evidence and operation, and the fix."""


class InvalidVersion(ValidationError):
    """Raised for a version that is neither a semantic version nor a safe tag."""


class InvalidContract(ValidationError):
    """Raised for a contract that is not valid JSON Schema."""


class InvalidTraffic(ValidationError):
    """Raised for a route table whose weights do not add up or that names unusable releases."""


class SignatureInvalid(ValidationError):
    """Raised when a release that must be signed is unsigned, signed by a key that is not
    trusted, or carries a signature that does not verify over its manifest digest. Like any
    refused target, it makes an automatic rollback freeze instead."""

    http_status = 409


class NotFound(BackoutError):
    """Raised when a named thing does not exist in the store."""

    http_status = 404


class ReleaseNotFound(NotFound):
    """Raised for an unknown model@version."""


class ModelNotFound(NotFound):
    """Raised for a model with no releases or no deployment."""


class UnknownKey(NotFound):
    """Raised when a signing key is not among the trusted keys (never added, or removed)."""


class Conflict(BackoutError):
    """Raised when a request contradicts what the store already holds."""

    http_status = 409


class ReleaseExists(Conflict):
    """Raised when model@version is registered again with other content."""


class ReleaseInUse(Conflict):
    """Raised when deleting a release that has served production traffic."""


class OperationInProgress(Conflict):
    """Raised when a rollout or rollback is already running for the model."""


class Frozen(Conflict):
    """Raised when traffic changes are asked of a frozen model."""


class IntegrityError(BackoutError):
    """Raised when stored bytes no longer match their digest."""

    exit_code = 1
    http_status = 500


class ArtifactCorrupt(IntegrityError):
    """Raised when a blob's bytes do not hash to its address."""


class AuditChainBroken(IntegrityError):
    """Raised when the event log's hash chain does not verify."""


class RouterError(BackoutError):
    """Raised when a traffic router cannot be reached, refuses a table, or cannot say what it
    serves. The controller records it and tries again on its next tick."""

    http_status = 502
    retriable = True


class TelemetryUnavailable(BackoutError):
    """Raised when a telemetry source (Prometheus) cannot be reached, times out or answers
    something that is not a query result. The controller decides nothing on it."""

    http_status = 503
    retriable = True


class AccessDenied(BackoutError):
    """Raised by the control API when it will not act for the caller."""

    http_status = 403


class Unauthenticated(AccessDenied):
    """Raised for a request with no credentials, or an unknown, revoked or expired token (401).

    The message never repeats the token."""

    http_status = 401


class Forbidden(AccessDenied):
    """Raised when the caller's roles lack the right asked for on that model (403).

    ``right`` names the missing right; the message says who, what and on which model."""

    http_status = 403

    def __init__(self, message: str, *, right: str = "") -> None:
        super().__init__(message)
        self.right = right


class ArtifactError(BackoutError):
    """Raised when a file to register is missing or unreadable."""

    exit_code = 2


class RuntimeLoadError(BackoutError):
    """Raised when a release cannot be loaded into a predictor."""

    http_status = 503


class MlflowMissing(RuntimeLoadError):
    """Raised when an MLflow release is loaded where MLflow is not installed."""


class ModelError(BackoutError):
    """Raised when a loaded release fails while predicting (the model itself raised).

    The gateway answers 500 and counts it as a model exception of that release.
    """

    http_status = 500


class UpstreamError(ModelError):
    """Raised when an HTTP upstream answers with a server error or cannot be reached."""

    http_status = 502
    retriable = True


class UpstreamTimeout(UpstreamError):
    """Raised when an HTTP upstream does not answer within the release's timeout."""

    http_status = 504
