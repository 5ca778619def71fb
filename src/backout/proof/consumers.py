"""Consumer contracts: what each registered caller of a model sends and reads.

In the spirit of consumer-driven contract testing, the team that calls a model writes a
small YAML file saying which input fields it sends and which output fields (and enum
values) it relies on. The compatibility diff (:mod:`backout.proof.compat`) checks a rollback or
rollout target against every consumer and names who would break. Example::

    name: checkout
    model: iris
    owner: payments-team
    contact: "#payments-oncall"
    sends:
      sepal_length: number
      petal_width: {type: number, minimum: 0}
    reads:
      label: {enum: [setosa, versicolor]}
      probabilities: {}

The store and ``backout consumers add|list`` keep these as :meth:`ConsumerContract.to_dict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from backout.configfile import MAX_YAML_BYTES, read_text_file, validate_yaml
from backout.errors import ConfigError, InvalidContract
from backout.proof.contracts import JSON_TYPES
from backout.registry.manifest import MODEL_NAME, check_json_schema

Scalar = str | int | float | bool | None


def _field_schema(value: Any) -> dict[str, Any]:
    """A sent field's type: a JSON type name (``number``) or a small JSON Schema."""
    if isinstance(value, str):
        if value not in JSON_TYPES:
            raise ValueError(
                f"unknown type {value!r}: expected one of {', '.join(sorted(JSON_TYPES))}"
            )
        return {"type": value}
    if isinstance(value, dict):
        try:
            return check_json_schema(value, "the field's schema")
        except InvalidContract as exc:  # pydantic reports ValueError with the field's path
            raise ValueError(str(exc)) from exc
    raise ValueError("expected a JSON type name such as number, or a JSON Schema mapping")


FieldSchema = Annotated[dict[str, Any], BeforeValidator(_field_schema)]


class ReadField(BaseModel):
    """An output field a consumer reads; ``enum`` lists the values its code relies on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enum: tuple[Scalar, ...] | None = None


def _reads(value: Any) -> Any:
    # `reads: [label, probabilities]` is shorthand for fields read without relied-on values.
    if isinstance(value, list):
        return {name: {} for name in value}
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


class ConsumerContract(BaseModel):
    """A registered caller of a model: who it is, the fields it sends and the outputs it reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the consumer, e.g. a service name")
    model: str = Field(description="the model it calls")
    owner: str = ""
    contact: str = Field(default="", description="where to reach the owner: a channel, an email")
    sends: dict[str, FieldSchema] = Field(default_factory=dict)
    reads: Annotated[dict[str, ReadField], BeforeValidator(_reads)] = Field(default_factory=dict)

    @field_validator("name", "model")
    @classmethod
    def _name(cls, v: str) -> str:
        if not MODEL_NAME.match(v):
            raise ValueError(
                "use lower-case letters, digits, '_' and '-' (at most 63, starting with a "
                "letter or digit)"
            )
        return v

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data for the store."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsumerContract:
        """Rebuild a stored consumer; :class:`ConfigError` names the bad field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ConfigError(
                f"consumer contract is not valid: {_describe(exc.errors()[0])}"
            ) from exc


def _describe(error: Any) -> str:
    value = error.get("input")
    got = "missing" if error["type"] == "missing" else f"got {value!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in error['loc']) or '(top level)'}: {message} ({got})"


def parse_consumer_yaml(text: str, source: str = "<consumer>") -> ConsumerContract:
    """Parse a consumer contract from YAML text, as policies are parsed: YAML 1.2 booleans,
    duplicate keys refused, the size and alias limits, and every error on its own line
    ``source:line: field: what is wrong``."""
    return validate_yaml(ConsumerContract, text, source, what="a consumer contract")


def load_consumer_file(path: str | Path) -> ConsumerContract:
    """Load a consumer contract from a YAML file (see the module docstring for its shape)."""
    text = read_text_file(path, what="consumer file", limit=MAX_YAML_BYTES)
    return parse_consumer_yaml(text, str(path))


# -- the store's registry of consumers ---------------------------------------------------------


def register_consumer(store: Any, consumer: ConsumerContract, *, actor: str) -> bool:
    """Add or replace a consumer of its model; True when it is new. Appends an event."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from backout.store import audit, schema

    T = schema.consumers
    doc = consumer.to_dict()
    with store.write() as conn:
        where = (T.c.model == consumer.model, T.c.name == consumer.name)
        exists = conn.execute(sa.select(T.c.name).where(*where)).first() is not None
        if exists:
            conn.execute(
                T.update().where(*where).values(contract=doc, updated_at=datetime.now(UTC))
            )
        else:
            conn.execute(
                T.insert().values(
                    model=consumer.model,
                    name=consumer.name,
                    contract=doc,
                    updated_at=datetime.now(UTC),
                )
            )
        audit.append(conn, "consumer.registered" if not exists else "consumer.updated", model=consumer.model,
                     actor=actor, reason=f"consumer {consumer.name}", data={"consumer": doc})  # fmt: skip
    return not exists


def list_consumers(store: Any, model: str) -> list[ConsumerContract]:
    """The registered consumers of ``model``, by name."""
    import sqlalchemy as sa

    from backout.store import schema

    T = schema.consumers
    with store.read() as conn:
        rows = conn.execute(sa.select(T.c.contract).where(T.c.model == model).order_by(T.c.name))
        return [ConsumerContract.from_dict(r.contract) for r in rows]


def remove_consumer(store: Any, model: str, name: str, *, actor: str) -> None:

    from backout.errors import NotFound
    from backout.store import audit, schema

    T = schema.consumers
    with store.write() as conn:
        res = conn.execute(T.delete().where(T.c.model == model, T.c.name == name))
        if not res.rowcount:
            raise NotFound(f"{name!r} is not a registered consumer of {model}")
        audit.append(conn, "consumer.removed", model=model, actor=actor, reason=f"consumer {name}")
