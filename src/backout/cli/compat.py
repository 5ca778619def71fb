"""``backout compat MODEL@A MODEL@B``: can B take A's live traffic?

For the releaser before a rollout and the responder before a rollback: the two releases'
contracts are compared field by field, and against every registered consumer.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from backout.cli.output import JsonOpt, out, print_json, settings
from backout.errors import ConfigError


def compat(
    ctx: typer.Context,
    live: Annotated[str, typer.Argument(help="MODEL@A: the release that takes traffic now.")],
    target: Annotated[str, typer.Argument(help="MODEL@B: the release that would take it.")],
    json: JsonOpt = False,
) -> None:
    """Can B take A's live traffic? Field by field, against every registered consumer.

    Exit 0 when compatible, 1 when anything breaks.
    """
    from backout.control.preflight import compat_report
    from backout.proof.compat import COLUMNS
    from backout.registry.manifest import parse_ref

    s = settings(ctx)
    (model, a), (model_b, b) = parse_ref(live), parse_ref(target)
    if model != model_b:
        raise ConfigError(f"{live} and {target} are releases of different models")
    if (remote := s.remote()) is not None:
        from backout.proof.compat import CompatReport

        report = CompatReport.from_dict(remote.get(f"/models/{model}/compat", live=a, target=b))
    else:
        report = compat_report(s.store(), s.registry(), model, a, b)
    if json:
        print_json(report.to_dict())
    else:
        out.print(report.summary())
        rows = report.rows()
        if rows:
            t = Table(box=None, header_style="bold")
            for col in COLUMNS:
                t.add_column(col)
            for row in rows:
                t.add_row(*row)
            out.print(t)
    if not report.compatible:
        raise typer.Exit(1)
