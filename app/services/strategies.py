"""Strategy use cases: configs, attaching them to symbols, modes, limits, live, kill switch.

Every function takes the acting user's id and works on that user's rows only;
another user's config or attachment is :class:`NotFound` and the attempt is
audited, so ids do not reveal what exists. Input comes from forms and the API,
so numbers may be strings ("1,000,000"); every refusal is a
:class:`ValidationFailed` whose codes map to ``error.<code>`` in
``app/i18n/*.strategy_exec.json`` (params errors: ``error.strategy_<code>`` from the
registry, in ``*.strategies.json``). A refused change writes nothing.

Live trading is reached only through :func:`go_live`: a typed confirmation phrase,
one of the user's own broker accounts, and all three limits. Anything that changes
what a live strategy would do (its params, its timeframe, a revive after the kill
switch, leaving live mode) takes the confirmation away again. The runner re-checks
all of it on every order, so these rules hold even against a hand-edited row.

Edits bump ``updated_at`` and notify the runner, which reloads what changed.
"""

from __future__ import annotations

# The use cases live in two modules by concern; this one is the public face that pages,
# states, the API, the CLI and tests import, so it re-exports their names unchanged.
from app.services.strategy_attachments import (
    _normalise_phrase as _normalise_phrase,  # unit tests check the phrase folding
)
from app.services.strategy_attachments import (
    attach,
    detach,
    get_attachment,
    go_live,
    kill,
    kill_all,
    list_orders,
    live_phrases,
    revive,
    set_limits,
    set_mode,
)
from app.services.strategy_configs import (
    ATTACHMENT_TARGET,
    CONFIG_TARGET,
    LIMIT_CAPS,
    LIMIT_FIELDS,
    MAX_ATTACHMENTS,
    MAX_CONFIGS,
    MAX_LABEL,
    TIMEFRAMES,
    AttachmentView,
    ConfigView,
    FieldErrors,
    StrategyOrderView,
    check_params,
    create_config,
    delete_config,
    get_config,
    list_configs,
    update_config,
)

__all__ = [
    "ATTACHMENT_TARGET",
    "CONFIG_TARGET",
    "LIMIT_CAPS",
    "LIMIT_FIELDS",
    "MAX_ATTACHMENTS",
    "MAX_CONFIGS",
    "MAX_LABEL",
    "TIMEFRAMES",
    "FieldErrors",
    "AttachmentView",
    "ConfigView",
    "StrategyOrderView",
    "attach",
    "check_params",
    "create_config",
    "delete_config",
    "detach",
    "get_attachment",
    "get_config",
    "go_live",
    "kill",
    "kill_all",
    "list_configs",
    "list_orders",
    "live_phrases",
    "revive",
    "set_limits",
    "set_mode",
    "update_config",
]
